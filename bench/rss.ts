/**
 * Peak resident memory of this process (worker threads included) during one
 * variant. process.resourceUsage().maxRSS is a lifetime peak, so each variant
 * (a) samples process.memoryUsage.rss() every 20 ms and (b) on Linux resets
 * the kernel's high-water mark (write "5" to /proc/self/clear_refs) and reads
 * VmHWM at the end, which also catches peaks between samples.
 */
import fs from "node:fs";

const gc = (globalThis as { gc?: () => void }).gc;

function resetHighWater(): boolean {
  try {
    fs.writeFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

function highWaterBytes(): number | null {
  try {
    const match = /VmHWM:\s+(\d+)\s+kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export interface RssReport {
  /** RSS when the variant started (after a GC when --expose-gc is on). */
  startBytes: number;
  /** Largest 20 ms sample of process.memoryUsage.rss(). */
  sampledPeakBytes: number;
  /** Kernel high-water mark since the variant started, or null when it cannot be reset. */
  highWaterBytes: number | null;
  /** max(sampled, high-water). */
  peakBytes: number;
  samples: number;
}

export class RssSampler {
  private readonly timer: NodeJS.Timeout;
  private readonly hwmReset: boolean;
  private readonly start: number;
  private peak: number;
  private samples = 0;

  constructor(intervalMs = 20) {
    gc?.();
    this.hwmReset = resetHighWater();
    this.start = process.memoryUsage.rss();
    this.peak = this.start;
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  sample(): void {
    const rss = process.memoryUsage.rss();
    this.samples += 1;
    if (rss > this.peak) this.peak = rss;
  }

  stop(): RssReport {
    this.sample();
    clearInterval(this.timer);
    const hwm = this.hwmReset ? highWaterBytes() : null;
    return {
      startBytes: this.start,
      sampledPeakBytes: this.peak,
      highWaterBytes: hwm,
      peakBytes: Math.max(this.peak, hwm ?? 0),
      samples: this.samples,
    };
  }
}

export const gcAvailable = gc !== undefined;
