// The sign-in sheet's model: which step is done, which runs, what the admin sees.
import type { SignInEvent } from "./types";

export type StepKey = "browser" | "waiting" | "exchanging" | "verifying";
export type StepState = "pending" | "active" | "done";

export interface SignInState {
  name: string;
  url: string | null;
  opened: boolean;
  openError: string | null;
  deviceCode: { user_code: string; verification_uri: string } | null;
  steps: { key: StepKey; label: string; state: StepState }[];
  /** Position in a queue of sign-ins ("2 of 10"), when there is one. */
  position: { index: number; total: number } | null;
}

export const STEP_LABELS: Record<StepKey, string> = {
  browser: "Open the sign-in page in your browser",
  waiting: "Waiting for sign-in in your browser",
  exchanging: "Exchanging the code for tokens",
  verifying: "Logging in to the mailbox to prove access",
};

const ORDER: StepKey[] = ["browser", "waiting", "exchanging", "verifying"];

export function initialSignIn(name: string, position: SignInState["position"] = null): SignInState {
  return {
    name,
    url: null,
    opened: false,
    openError: null,
    deviceCode: null,
    steps: ORDER.map((key, i) => ({ key, label: STEP_LABELS[key], state: i === 0 ? "active" : "pending" })),
    position,
  };
}

function activate(s: SignInState, key: StepKey | null): SignInState {
  const at = key === null ? ORDER.length : ORDER.indexOf(key);
  return { ...s, steps: s.steps.map((st, i) => ({ ...st, state: i < at ? "done" : i === at ? "active" : "pending" })) };
}

/** The state after one progress event from the shell. */
export function applySignInEvent(s: SignInState, e: SignInEvent): SignInState {
  switch (e.step) {
    case "browser_opened":
      return activate({ ...s, url: e.url, opened: e.opened, openError: e.error }, "waiting");
    case "waiting_for_sign_in":
      return activate(s, "waiting");
    case "device_code":
      return activate({ ...s, deviceCode: { user_code: e.user_code, verification_uri: e.verification_uri }, url: e.verification_uri_complete ?? e.verification_uri }, "waiting");
    case "exchanging":
      return activate(s, "exchanging");
    case "verifying":
      return activate(s, "verifying");
    case "done":
      return activate(s, null);
  }
}
