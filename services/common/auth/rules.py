"""Access rules read from the protos, and the one decision every call passes."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor

from services.common.auth.model import AccessRule, Caller, CredentialKind, Role, is_write_scope
from services.common.errors import NotFoundError, PermissionDeniedError
from services.common.gen.handoff.auth.v1 import access_pb2

_ROLES = {
    access_pb2.OPERATOR: Role.OPERATOR,
    access_pb2.INGEST: Role.INGEST,
    access_pb2.SCHEDULER: Role.SCHEDULER,
}


class MissingRuleError(RuntimeError):
    """A mounted method has no (usable) handoff.auth.v1.access option."""


def rule_of(method: MethodDescriptor) -> AccessRule:
    """The access rule declared on an RPC, or MissingRuleError."""
    options = method.GetOptions()
    if not options.HasExtension(access_pb2.access):
        raise MissingRuleError(f"{method.full_name} has no (handoff.auth.v1.access) option")
    declared = options.Extensions[access_pb2.access]
    rule = AccessRule(
        roles=frozenset(_ROLES[r] for r in declared.roles),
        scope=declared.scope,
        account_field=declared.account_field,
        any_caller=declared.any_caller,
    )
    if not (rule.roles or rule.scope or rule.any_caller):
        raise MissingRuleError(f"{method.full_name}: its access rule lets nobody call it")
    if rule.scope and not rule.account_field:
        raise MissingRuleError(f"{method.full_name}: a scope needs an account_field")
    if rule.account_field:
        if method.client_streaming:
            raise MissingRuleError(f"{method.full_name}: account_field needs a unary request")
        if rule.account_field not in method.input_type.fields_by_name:
            raise MissingRuleError(
                f"{method.full_name}: {method.input_type.name} has no field {rule.account_field}"
            )
    return rule


def method_rules(service_names: Iterable[str]) -> dict[str, AccessRule]:
    """Every method of the named services by its gRPC path ("/pkg.Service/Method")."""
    pool = descriptor_pool.Default()
    rules: dict[str, AccessRule] = {}
    for name in service_names:
        service = pool.FindServiceByName(name)
        for method in service.methods:
            rules[f"/{service.full_name}/{method.name}"] = rule_of(method)
    return rules


def authorize(rule: AccessRule, caller: Caller, what: str, account_value: str | None) -> None:
    """Raise unless `caller` may make the call `what` under `rule`.

    `account_value` is the request's account field (None when the rule names none). An
    account token naming another account gets NOT_FOUND, as for an id that does not
    exist: the answer is the same whether that account exists or not.
    """
    if rule.any_caller:
        return
    if caller.kind is CredentialKind.SERVICE:
        if caller.roles & rule.roles:
            return
        needed = ", ".join(sorted(r.value for r in rule.roles)) or "an account token"
        held = ", ".join(sorted(r.value for r in caller.roles))
        raise PermissionDeniedError(
            f"{what} needs the role {needed}; credential {caller.credential_id} holds {held}"
        )
    if not rule.scope:
        raise PermissionDeniedError(f"{what} is not open to account tokens")
    if rule.scope not in caller.scopes:
        raise PermissionDeniedError(
            f"{what} needs the scope {rule.scope}; token {caller.credential_id} holds "
            + (", ".join(sorted(caller.scopes)) or "none")
        )
    if account_value:
        try:
            named = UUID(account_value)
        except ValueError:
            named = None  # the servicer answers INVALID_ARGUMENT naming the field
        if named is not None and named != caller.account_id:
            raise NotFoundError(f"account {named} does not exist")
    if caller.account_archived and is_write_scope(rule.scope):
        raise PermissionDeniedError(
            f"account {caller.account_id} is archived: its tokens may read and export, "
            "but change nothing"
        )
