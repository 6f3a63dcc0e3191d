// The shapes that cross IPC, generated from the Rust types into `bindings.ts` (see
// src-tauri/src/bindings.rs): never written here. This module only re-exports them, some under
// the names the window's code uses.
export type * from "./bindings";
export type {
  Certificate as AppCertificate,
  CreatedCertView as CreatedCert,
  Imported as HandoverImported,
  PresetView as Preset,
} from "./bindings";
