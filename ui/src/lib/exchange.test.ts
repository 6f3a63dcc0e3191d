import { describe, expect, it } from "vitest";
import { exchangeTargets, permissionCount, placeExchangeErrors } from "./exchange";

describe("Exchange script dialog", () => {
  it("is for the app-only mailboxes among the chosen ones", () => {
    const boxes = [
      { name: "a", flow: "client_credentials" as const },
      { name: "b", flow: "auth_code" as const },
      { name: "c", flow: "client_credentials" as const },
      { name: "d", flow: "device" as const },
    ];
    expect(exchangeTargets(boxes, ["a", "b", "c", "gone"])).toEqual({ appOnly: ["a", "c"], other: ["b", "gone"] });
    expect(exchangeTargets(boxes, ["b", "d"]).appOnly).toEqual([]);
  });

  it("places the core's field errors next to their inputs", () => {
    const placed = placeExchangeErrors([
      { field: "object_id", message: "is a GUID" },
      { field: "client_id", message: "the mailboxes use different client ids (x, y)" },
      { field: "display_name", message: "give the service principal a name" },
      { field: "mailboxes", message: "choose at least one mailbox" },
      { field: "other", message: "?" },
    ]);
    expect(placed.byField).toEqual({
      object_id: ["is a GUID"],
      display_name: ["give the service principal a name"],
      mailboxes: ["the mailboxes use different client ids (x, y)", "choose at least one mailbox"],
    });
    expect(placed.other).toEqual(["other: ?"]);
  });

  it("counts the mailbox permissions of a script", () => {
    const script = "New-ServicePrincipal -AppId 'x'\n\n# a@x\nAdd-MailboxPermission -Identity 'a@x'\n# b@x\nAdd-MailboxPermission -Identity 'b@x'\n";
    expect(permissionCount(script)).toBe(2);
  });
});
