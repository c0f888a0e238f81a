/**
 * `arch watch`: the spot-notice watcher, a long-running command (systemd unit
 * `arch-watch.service`). Parses and validates its options (bad input: one sentence, nothing
 * started), takes the node's watcher lock (`<stateDir>/watch.lock`, flock: one watcher per
 * node), picks the cloud (`--provider auto` detects it and says what it found), then runs the
 * watch loop (`src/spot/loop.ts`) until SIGTERM or SIGINT, which end it cleanly (a running
 * finalize is awaited first).
 */

import { type HostConfig, loadHostConfig } from "../config/host_schema.ts";
import { nodeCensus, recordCensus, runcLister } from "../registry/census.ts";
import { Logger } from "../log/log.ts";
import { PreconditionError, UsageError } from "../util/errors.ts";
import { tryLockFile } from "../exitwatch/pidfd.ts";
import {
  DEFAULT_MARGIN_SECONDS,
  MAX_NOTICE_SECONDS,
  type NoticeSource,
  printable,
  type ProviderName,
  PROVIDERS,
} from "../spot/notice.ts";
import { AwsSource } from "../spot/aws.ts";
import { GcpSource } from "../spot/gcp.ts";
import { AzureSource } from "../spot/azure.ts";
import { detectProvider } from "../spot/detect.ts";
import { handledFromStatus, type RebalancePolicy, Watcher } from "../spot/loop.ts";
import { readStatus, statusPath } from "../spot/status.ts";
import { spawnFinalize } from "../spot/finalize.ts";

/** The options of `arch watch` as commander hands them over. */
export interface WatchCliOptions {
  provider?: string;
  endpoint?: string[];
  interval?: string;
  margin?: string;
  onRebalance?: string;
  once?: boolean;
  dmi?: string;
}

/** The validated options of `arch watch`. */
export interface WatchSettings {
  readonly provider: ProviderName | "auto";
  readonly endpoints: Partial<Record<ProviderName, string>>;
  readonly intervalMs: number;
  readonly marginSeconds: number;
  readonly onRebalance: RebalancePolicy;
  readonly once: boolean;
  readonly dmiPath?: string;
}

/** Shortest `--interval`, seconds: a shorter one would hammer the metadata server. */
export const MIN_INTERVAL_SECONDS = 0.1;
/** Longest `--interval`, seconds (AWS checks for notices every 5 s; a longer wait misses its 2 minutes). */
export const MAX_INTERVAL_SECONDS = 60;
/** Longest `--margin`, seconds: the longest notice any cloud gives. */
export const MAX_MARGIN_SECONDS = Math.max(...Object.values(MAX_NOTICE_SECONDS));

const isProvider = (p: string): p is ProviderName => (PROVIDERS as readonly string[]).includes(p);

function httpUrl(value: string, option: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`${option} "${value}" is not a URL: give one such as http://169.254.169.254`);
  }
  if (url.protocol !== "http:" || url.search !== "" || url.hash !== "") {
    throw new UsageError(`${option} "${value}" must be an http:// base URL without query, e.g. http://169.254.169.254`);
  }
  return value.replace(/\/+$/, "");
}

/**
 * Validates the options of `arch watch`; throws {@link UsageError} naming the option, the
 * value and the fix.
 *
 * @example
 * ```ts
 * import { parseWatchOptions } from "./watch.ts";
 * const s = parseWatchOptions({ provider: "aws", endpoint: ["http://127.0.0.1:8080"], interval: "5" });
 * if (s.endpoints.aws !== "http://127.0.0.1:8080" || s.intervalMs !== 5000) throw new Error();
 * ```
 */
export function parseWatchOptions(opts: WatchCliOptions): WatchSettings {
  const provider = opts.provider ?? "auto";
  if (provider !== "auto" && !isProvider(provider)) {
    throw new UsageError(`--provider "${provider}" is not a cloud ARCH knows: use aws, gcp, azure or auto`);
  }
  const endpoints: Partial<Record<ProviderName, string>> = {};
  for (const raw of opts.endpoint ?? []) {
    const m = /^(aws|gcp|azure)=(.*)$/.exec(raw);
    if (m !== null) {
      const named = m[1] as ProviderName;
      endpoints[named] = httpUrl(m[2]!, "--endpoint");
    } else if (provider === "auto") {
      throw new UsageError(
        `--endpoint "${raw}" names no cloud: with --provider auto write aws=URL, gcp=URL or azure=URL`,
      );
    } else endpoints[provider] = httpUrl(raw, "--endpoint");
  }
  const seconds = (value: string | undefined, fallback: number, option: string, min: number, max: number) => {
    if (value === undefined) return fallback;
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
      throw new UsageError(`${option} "${value}" is not a number of seconds from ${min} to ${max}: e.g. ${fallback}`);
    }
    return n;
  };
  const interval = seconds(opts.interval, 5, "--interval", MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS);
  const margin = seconds(opts.margin, DEFAULT_MARGIN_SECONDS, "--margin", 0, MAX_MARGIN_SECONDS);
  const onRebalance = opts.onRebalance ?? "log";
  if (onRebalance !== "log" && onRebalance !== "finalize") {
    throw new UsageError(`--on-rebalance "${onRebalance}" is not a policy: use log or finalize`);
  }
  return {
    provider,
    endpoints,
    intervalMs: Math.round(interval * 1000),
    marginSeconds: margin,
    onRebalance,
    once: opts.once ?? false,
    ...(opts.dmi !== undefined ? { dmiPath: opts.dmi } : {}),
  };
}

/** The notice source of `provider`, at its endpoint (its cloud's default unless overridden). */
export function sourceFor(provider: ProviderName, endpoint: string | undefined): NoticeSource {
  const o = endpoint !== undefined ? { endpoint } : {};
  if (provider === "aws") return new AwsSource(o);
  if (provider === "gcp") return new GcpSource(o);
  return new AzureSource(o);
}

const say = (line: string) => console.log(line);

/**
 * `arch watch`: watches spot notices until SIGTERM/SIGINT and runs `arch finalize` on one.
 * Returns 0 after a clean stop (with `--once`: 1 if the poll failed); throws
 * {@link PreconditionError} when another watcher runs or no cloud is detected. Requires root
 * (finalize does).
 */
export async function watch(opts: WatchCliOptions): Promise<number> {
  const settings = parseWatchOptions(opts);
  const host = loadHostConfig();
  const logger = new Logger(host.logFile, { component: "watch" }, host.logLevel);
  Deno.mkdirSync(host.stateDir, { recursive: true, mode: 0o700 });
  const lockPath = `${host.stateDir}/watch.lock`;
  const lockFd = tryLockFile(lockPath);
  if (lockFd === undefined) {
    const pid = (() => {
      try {
        return Deno.readTextFileSync(lockPath).trim();
      } catch {
        return "?";
      }
    })();
    throw new PreconditionError(
      `another arch watch (pid ${pid}) already watches this node: stop it first (systemctl stop arch-watch)`,
      "watch-running",
    );
  }
  Deno.writeTextFileSync(lockPath, `${Deno.pid}\n`);

  let provider: ProviderName;
  if (settings.provider === "auto") {
    const detection = await detectProvider({
      endpoints: settings.endpoints,
      ...(settings.dmiPath !== undefined ? { dmiPath: settings.dmiPath } : {}),
    });
    const message = printable(detection.message);
    logger.log(detection.provider === null ? "error" : "info", message, { detection });
    say(message);
    if (detection.provider === null) throw new PreconditionError(message, "no-cloud");
    provider = detection.provider;
  } else provider = settings.provider;

  const file = statusPath(host.stateDir);
  const previous = readStatus(file);
  const same = previous?.provider === provider ? previous : undefined;
  const watcher = new Watcher({
    source: sourceFor(provider, settings.endpoints[provider]),
    finalize: spawnFinalize(host.configPath, logger, say),
    intervalMs: settings.intervalMs,
    marginSeconds: settings.marginSeconds,
    onRebalance: settings.onRebalance,
    rebalanceDeadlineSeconds: host.finalizeDeadlineSeconds,
    statusFile: file,
    logger,
    say,
    handled: handledFromStatus(same),
    ...(same !== undefined ? { previous: { notice: same.notice, finalize: same.finalize } } : {}),
  });
  const stop = () => watcher.stop();
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  for (const s of signals) Deno.addSignalListener(s, stop);
  // The node's census keeps `arch_unprotected_containers` current, and the log says when an
  // opted-in container runs without protection (once per container).
  const census = settings.once ? undefined : watchProtection(host, logger);
  try {
    await watcher.run(settings.once);
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, stop);
    census?.stop();
  }
  return settings.once && watcher.status.lastError !== null ? 1 : 0;
}

/** How often the watcher counts the node's opted-in containers (`registry/census.ts`). */
export const CENSUS_INTERVAL_MS = 30_000;

/** Runs the census every {@link CENSUS_INTERVAL_MS} until stopped; logs each newly unprotected container once. */
function watchProtection(host: HostConfig, logger: Logger): { stop(): void } {
  const warned = new Set<string>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const round = async () => {
    try {
      const census = await nodeCensus(host, runcLister(host.runcPath));
      recordCensus(host, census);
      // Forget containers that are gone or protected now: a later lapse is logged again.
      const current = new Set(
        census.containers.filter((c) => c.protection === "unprotected").map((c) => `${c.namespace}/${c.id}`),
      );
      for (const name of warned) if (!current.has(name)) warned.delete(name);
      for (const c of census.containers) {
        const name = `${c.namespace}/${c.id}`;
        if (c.protection !== "unprotected" || c.status !== "running" || warned.has(name)) continue;
        warned.add(name);
        logger.warn("an opted-in container runs unprotected: a notice would not save it", {
          namespace: c.namespace,
          id: c.id,
          reason: c.reason,
        });
      }
    } catch (error) {
      logger.warn("cannot count the node's containers", { error: String(error) });
    }
    if (!stopped) timer = setTimeout(round, CENSUS_INTERVAL_MS);
  };
  timer = setTimeout(round, 0);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
