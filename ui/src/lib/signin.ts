// The sign-in sheet's model: which step is done, which runs, what the admin sees.
import type { Flow, SignInEvent } from "./types";

export type StepKey = "browser" | "device" | "token" | "waiting" | "exchanging" | "verifying";
export type StepState = "pending" | "active" | "done";

export interface DeviceCode {
  user_code: string;
  verification_uri: string;
  verification_uri_complete: string | null;
  expires_in: number;
}

export interface SignInState {
  name: string;
  flow: Flow;
  url: string | null;
  opened: boolean;
  openError: string | null;
  deviceCode: DeviceCode | null;
  steps: { key: StepKey; label: string; state: StepState }[];
  /** Position in a queue of sign-ins ("2 of 10"), when there is one. */
  position: { index: number; total: number } | null;
}

const VERIFYING = "Logging in to the mailbox to prove access";

/** The steps each flow goes through, in order, with what the sheet says for each. */
export const FLOW_STEPS: Record<Flow, { key: StepKey; label: string }[]> = {
  auth_code: [
    { key: "browser", label: "Open the sign-in page in your browser" },
    { key: "waiting", label: "Waiting for sign-in in your browser" },
    { key: "exchanging", label: "Exchanging the code for tokens" },
    { key: "verifying", label: VERIFYING },
  ],
  // The device flow's poll returns the tokens itself: no separate exchange step.
  device: [
    { key: "device", label: "Get a code to enter on another device" },
    { key: "waiting", label: "Waiting for sign-in on the other device" },
    { key: "verifying", label: VERIFYING },
  ],
  client_credentials: [
    { key: "token", label: "Get an app-only token with the stored certificate or client secret" },
    { key: "verifying", label: VERIFYING },
  ],
};

export function initialSignIn(name: string, position: SignInState["position"] = null, flow: Flow = "auth_code"): SignInState {
  return {
    name,
    flow,
    url: null,
    opened: false,
    openError: null,
    deviceCode: null,
    steps: FLOW_STEPS[flow].map((st, i) => ({ ...st, state: i === 0 ? "active" : "pending" })),
    position,
  };
}

/** Marks the steps before `key` done and `key` active (`null`: all done). A step the flow does
 * not have changes nothing. */
function activate(s: SignInState, key: StepKey | null): SignInState {
  const at = key === null ? s.steps.length : s.steps.findIndex((st) => st.key === key);
  if (at < 0) return s;
  return { ...s, steps: s.steps.map((st, i) => ({ ...st, state: i < at ? "done" : i === at ? "active" : "pending" })) };
}

/** The state after one progress event from the shell. */
export function applySignInEvent(s: SignInState, e: SignInEvent): SignInState {
  switch (e.step) {
    case "browser_opened":
      return activate({ ...s, url: e.url, opened: e.opened, openError: e.error }, "waiting");
    case "waiting_for_sign_in":
      return activate(s, "waiting");
    case "device_code": {
      const { user_code, verification_uri, verification_uri_complete, expires_in } = e;
      // Nothing is opened on this machine: the admin signs in on whatever device they like.
      return activate(
        { ...s, deviceCode: { user_code, verification_uri, verification_uri_complete, expires_in }, url: verification_uri_complete ?? verification_uri },
        "waiting",
      );
    }
    case "exchanging":
      return activate(s, "exchanging");
    case "verifying":
      return activate(s, "verifying");
    case "done":
      return activate(s, null);
  }
}

/** "in 10 minutes", "in 45 seconds": how long a device code is good for. */
export function expiresText(secs: number): string {
  if (secs >= 90) return `in ${Math.round(secs / 60)} minutes`;
  return `in ${secs} seconds`;
}
