"""``install --host otobo|znuny``: the web service and dynamic fields the bridge needs, as files
an administrator imports, and the steps to do it; ``uninstall`` prints how to remove them.

Nothing is changed on the helpdesk from here: OTOBO and Znuny import web services with their
console (``Admin::WebService::Add --source-path``, RotherOSS/otobo
``Kernel/System/Console/Command/Admin/WebService/Add.pm``; Znuny: ``bin/otrs.Console.pl``) and
dynamic fields with Admin > Dynamic Fields > Import (OTOBO ``Kernel/Modules/
AdminDynamicFieldImportExport.pm``) or Znuny's ``Admin::DynamicField::Import``, both reading the
ZnunyHelper YAML format ``DynamicFields: {Name: {...}}``.

The web service (``PostmasterBridge.yml``):

- Provider: the five operations the adapter calls, on the routes connector/hosts/otobo_api.py
  documents (TicketSearch as ``POST /TicketSearch``, so criteria travel as JSON), and the
  ``MaxLength`` the bridge assumes (``host.otobo.max_length``).
- Requester: one invoker per outbound account, on ``TicketDynamicFieldUpdate_PECReply`` with the
  condition "PECReply is this account", posting to ``<public_url>/hooks/otobo/<account>`` with
  the shared secret as the Basic-auth password (connector/outbound/otobo_hook.py says why it is
  not an HMAC). OTOBO uses ``Generic::PassThrough`` (the event data, with TicketID), Znuny
  ``Ticket::Generic``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import yaml

from connector.config import Config, HostConfig, OtoboHostConfig
from connector.outbound.settings import OutboundConfig

WEBSERVICE_NAME = "PostmasterBridge"
MARKER = "[managed-by=postmaster-bridge]"
REPLY_FIELD = "PECReply"
FLAVORS = {
    "otobo": {"console": "bin/otobo.Console.pl", "invoker": "Generic::PassThrough",
              "user": "otobo", "framework": "10.1.x"},
    "znuny": {"console": "bin/otrs.Console.pl", "invoker": "Ticket::Generic",
              "user": "otrs", "framework": "6.5.x"},
}
#: Operations and routes the adapter uses (connector/hosts/otobo_api.py).
OPERATIONS: tuple[tuple[str, str, str, str], ...] = (
    ("SessionCreate", "Session::SessionCreate", "POST", "/Session"),
    ("TicketCreate", "Ticket::TicketCreate", "POST", "/Ticket"),
    ("TicketGet", "Ticket::TicketGet", "GET", "/Ticket/:TicketID"),
    ("TicketSearch", "Ticket::TicketSearch", "POST", "/TicketSearch"),
    ("TicketUpdate", "Ticket::TicketUpdate", "PATCH", "/Ticket/:TicketID"),
)
_TEXT = {"DefaultValue": "", "Link": "", "LinkPreview": "", "RegExList": []}


def webservice(outbound: OutboundConfig, otobo: OtoboHostConfig, flavor: str,
               secret: str) -> dict[str, Any]:
    spec = FLAVORS[flavor]
    provider = {
        "Operation": {name: {"Description": f"{MARKER} {name}", "MappingInbound": {},
                             "MappingOutbound": {}, "Type": kind}
                      for name, kind, _method, _route in OPERATIONS},
        "Transport": {"Type": "HTTP::REST", "Config": {
            "KeepAlive": "", "MaxLength": str(otobo.max_length),
            "RouteOperationMapping": {name: {"RequestMethod": [method], "Route": route}
                                      for name, _kind, method, route in OPERATIONS}}},
    }
    data: dict[str, Any] = {
        "Debugger": {"DebugThreshold": "error", "TestMode": "0"},
        "Description": f"postmaster-bridge: PEC and postmaster channel {MARKER}",
        "FrameworkVersion": spec["framework"],
        "Provider": provider,
        "RemoteSystem": "",
        "Requester": {"Transport": {"Type": ""}},
    }
    accounts = outbound.enabled_accounts
    if accounts and outbound.service is not None:
        invokers = {}
        controllers = {}
        for account in accounts:
            name = f"PECReply_{account.account}"
            invokers[name] = {
                "Description": f"{MARKER} ask the bridge to send the agent's latest article "
                               f"by PEC from {account.account}",
                "Events": [{
                    "Asynchronous": "1",
                    "Condition": {"Condition": {"1": {
                        "Fields": {f"DynamicField_{REPLY_FIELD}": {
                            "Match": f"^{account.account}$", "Type": "Regexp"}},
                        "Type": "and"}}, "ConditionLinking": "and"},
                    "Event": f"TicketDynamicFieldUpdate_{REPLY_FIELD}",
                }],
                "MappingInbound": {}, "MappingOutbound": {}, "Type": spec["invoker"],
            }
            controllers[name] = {"Command": "POST",
                                 "Controller": f"/hooks/otobo/{account.account}"}
        data["Requester"] = {
            "Invoker": invokers,
            "Transport": {"Type": "HTTP::REST", "Config": {
                "Authentication": {"AuthType": "BasicAuth",
                                   "BasicAuthUser": "postmaster-bridge",
                                   "BasicAuthPassword": secret},
                "DefaultCommand": "POST",
                "Host": outbound.service.public_url,
                "InvokerControllerMapping": controllers,
                "Timeout": "30",
            }},
        }
    return data


def dynamic_fields(outbound: OutboundConfig, otobo: OtoboHostConfig,
                   pec_fields: Mapping[str, str]) -> dict[str, Any]:
    """The dynamic fields the configuration names, in the import format."""
    fields: dict[str, dict[str, Any]] = {}

    def text(name: str, label: str, object_type: str = "Ticket") -> None:
        fields[name] = {"Name": name, "Label": label, "FieldType": "Text",
                        "ObjectType": object_type, "InternalField": 0, "ValidID": 1,
                        "Config": dict(_TEXT)}

    text(otobo.message_id_field, "Postmaster bridge message id")
    text(otobo.article_key_field, "Postmaster bridge article key", "Article")
    if otobo.tags_field:
        text(otobo.tags_field, "Postmaster bridge tags")
    if otobo.receipt_state_field:
        text(otobo.receipt_state_field, "PEC delivery state")
    for fact, name in sorted(pec_fields.items()):
        text(name, f"PEC {fact.replace('_', ' ')}")
    accounts = [a.account for a in outbound.enabled_accounts]
    if accounts:
        fields[REPLY_FIELD] = {
            "Name": REPLY_FIELD, "Label": "Reply by PEC from", "FieldType": "Dropdown",
            "ObjectType": "Ticket", "InternalField": 0, "ValidID": 1,
            "Config": {"PossibleValues": {a: a for a in accounts}, "PossibleNone": 1,
                       "DefaultValue": "", "TranslatableValues": 0, "TreeView": 0,
                       "Link": "", "LinkPreview": ""}}
    return {"DynamicFields": fields}


def _pec_field_names(config: Config) -> dict[str, str]:
    names: dict[str, str] = {}
    for account in config.accounts:
        for fact, field in account.pec_custom_fields.items():
            if isinstance(field, str):
                names[fact] = field
    return names


def install_files(config: Config, outbound: OutboundConfig, flavor: str, directory: Path,
                  out: TextIO) -> int:
    host: HostConfig = config.host
    if host.otobo is None:
        print("install --host otobo needs host.type: otobo (with host.otobo) in the config",
              file=out)
        return 2
    spec = FLAVORS[flavor]
    directory.mkdir(parents=True, exist_ok=True)
    secret = outbound.service.signing_secret if outbound.service is not None else ""
    ws_path = directory / f"{WEBSERVICE_NAME}.yml"
    # The file holds the shared secret: readable by its owner only.
    fd = os.open(ws_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("---\n" + yaml.safe_dump(webservice(outbound, host.otobo, flavor, secret),
                                          sort_keys=True, allow_unicode=True))
    df_path = directory / "dynamic-fields.yml"
    df_path.write_text("---\n" + yaml.safe_dump(
        dynamic_fields(outbound, host.otobo, _pec_field_names(config)), sort_keys=True,
        allow_unicode=True), encoding="utf-8")
    console = spec["console"]
    print(f"wrote {ws_path} (holds the shared secret: delete it after the import)", file=out)
    print(f"wrote {df_path}", file=out)
    print("", file=out)
    print(f"Steps on the {flavor} server (as the {spec['user']} user):", file=out)
    if flavor == "znuny":
        print(f"  1. {console} Admin::DynamicField::Import {df_path.name}", file=out)
    else:
        print(f"  1. Admin > Dynamic Fields > Import: {df_path.name} (all fields).", file=out)
    print(f"  2. {console} Admin::WebService::Add --name {WEBSERVICE_NAME} "
          f"--source-path {ws_path.name}", file=out)
    print(f"     (later changes: {console} Admin::WebService::Update --webservice-id <id> "
          f"--source-path {ws_path.name}; ids: {console} Admin::WebService::List)", file=out)
    print(f"  3. An agent '{host.otobo.user}' with rw on the queues the bridge files into "
          f"(new tickets: '{host.otobo.queue}'); its password goes where host.otobo.password"
          "/password_file points.", file=out)
    if outbound.enabled_accounts:
        print(f"  4. Show the field {REPLY_FIELD} in the agent's note screen (SysConfig "
              f"Ticket::Frontend::AgentTicketNote###DynamicField: {REPLY_FIELD} = 1). An agent "
              "writes the reply as a note visible to the customer, then picks the account in "
              f"{REPLY_FIELD}; the bridge sends it by PEC and empties the field.", file=out)
    print(f"  Then: postmaster-bridge check (the web service answers at {host.url}).", file=out)
    return 0


def uninstall_steps(config: Config, flavor: str, out: TextIO) -> int:
    spec = FLAVORS[flavor]
    console = spec["console"]
    otobo = config.host.otobo
    names = [REPLY_FIELD]
    if otobo is not None:
        names = [otobo.message_id_field, otobo.article_key_field,
                 *(n for n in (otobo.tags_field, otobo.receipt_state_field) if n),
                 *_pec_field_names(config).values(), REPLY_FIELD]
    print(f"To remove the bridge from {flavor} (nothing is changed from here):", file=out)
    print(f"  1. {console} Admin::WebService::List   (find the id of {WEBSERVICE_NAME})",
          file=out)
    print(f"  2. {console} Admin::WebService::Delete --webservice-id <id>", file=out)
    print("  3. Dynamic fields (their values on tickets are deleted with them; keep them if "
          "the PEC facts should stay on the tickets):", file=out)
    for name in names:
        if flavor == "znuny":
            print(f"     Admin > Dynamic Fields: delete {name}", file=out)
        else:
            print(f"     {console} Admin::DynamicField::Delete --name {name} --force", file=out)
    print("  4. Remove or disable the bridge's agent.", file=out)
    return 0
