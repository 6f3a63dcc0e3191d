// The core's defaults and labels, from `core.json`, which `crates/core/src/contract.rs`
// generates (a core test fails when it is stale). Never edit either value here: change the core.
import core from "./core.json";
import type { Check, Security, Status } from "./types";

/** The Microsoft 365 tenant when none is given (`provider::DEFAULT_TENANT`). */
export const DEFAULT_TENANT: string = core.default_tenant;
/** The SMTP submission port for each security (`provider::default_smtp_port`). */
export const SMTP_PORTS: Record<Security, number> = core.smtp_ports;
/** The badge's words for each status (`Status::label`). */
export const STATUS_LABELS: Record<Status, string> = core.status_labels;
/** Each check's name in the history and uptime (`Check::label`). */
export const CHECK_LABELS: Record<Check, string> = core.check_labels;
/** The amber badge's words when only throttling makes it amber (`health::THROTTLED_LABEL`). */
export const THROTTLED_LABEL: string = core.throttled_label;
