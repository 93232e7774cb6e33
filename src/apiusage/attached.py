"""The caller the app attaches to a request, read the moment it is attached.

Apps name their caller by attaching a user to the request: ``request.state.user``
(Starlette, FastAPI), ``g.user`` or Flask-Login's user (Flask), ``request.user``
(Django). Resolvers run after the response, and by then an ORM object may be unreadable:
SQLAlchemy raises ``DetachedInstanceError`` for an object its commit expired once the
session is closed, and reading it while the session is open runs a query. So the adapters
watch the request state and read the caller when the app attaches it: the ASGI
middleware makes ``scope["state"]`` a :class:`WatchedState`, the Flask extension makes
``g`` of a :func:`watching_class`. :func:`identity_from_state` then uses what was read
then (or the error it raised), and only reads unwatched state late. (So does a feature
flag asked for in the handler, before the request ends.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from apiusage.caller import MAX_ID_LENGTH, Identity, as_identity
from apiusage.recording import annotate

__all__ = [
    "ID_FIELDS",
    "ORGANISATION_FIELDS",
    "CallerNotRead",
    "Watched",
    "WatchedState",
    "capture",
    "identity_from_state",
    "read_caller",
    "watching_class",
]

#: Where a caller's id is looked for, in this order (``sub`` is a JWT's subject claim).
ID_FIELDS = ("id", "pk", "user_id", "sub", "uuid", "username", "email")
#: Where its organisation is looked for; an object found there is read for its id.
ORGANISATION_FIELDS = (
    "organisation_id",
    "organization_id",
    "org_id",
    "company_id",
    "team_id",
    "tenant_id",
    "account_id",
    "organisation",
    "organization",
    "org",
)

_T = TypeVar("_T")
_MAPPING, _ROW, _OBJECT = 0, 1, 2
_KINDS: dict[type, int] = {dict: _MAPPING}


class CallerNotRead(Exception):
    """The app attached something to the request, but no caller could be read from it."""

    def __init__(self, seen: object) -> None:
        kind = type(seen)
        #: The attached value's type, as ``module.Class``.
        module = kind.__module__
        self.seen = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
        super().__init__(
            f"the attached {self.seen} has none of the fields {', '.join(ID_FIELDS)}, so its "
            "requests are recorded anonymous. Attach the caller's id itself, an object or "
            "dict with one of those fields, or an apiusage.Identity; or call "
            "apiusage.identify(...) where the app authenticates the caller (docs: identity.md)"
        )


def _kind(value_type: type) -> int:
    """How fields are read from values of a type: ``.get`` (mappings), ``row[name]`` for
    what is indexed by column name (``sqlite3.Row``, asyncpg's ``Record``), else
    attributes (ORM rows, dataclasses, pydantic and SQLModel models, named tuples)."""
    kind = _KINDS.get(value_type)
    if kind is None:
        if issubclass(value_type, Mapping):
            kind = _MAPPING
        elif callable(getattr(value_type, "keys", None)) and hasattr(value_type, "__getitem__"):
            kind = _ROW
        else:
            kind = _OBJECT
        if len(_KINDS) < 256:
            _KINDS[value_type] = kind
    return kind


def _field(value: Any, names: Iterable[str]) -> Any:
    kind = _kind(type(value))
    if kind == _ROW:
        keys = set(value.keys())
    for name in names:
        if kind == _MAPPING:
            found = value.get(name)
        elif kind == _ROW:
            found = value[name] if name in keys else None
        else:
            found = getattr(value, name, None)
        if found is not None and found != "":
            return found
    return None


def read_caller(value: Any) -> Identity | None:
    """The caller a value attached to a request names.

    ``None`` and anonymous users (``is_authenticated`` false) name none. An
    :class:`~apiusage.Identity` or an id (string, int) is taken as it is; from anything
    else (an ORM row, a dataclass, a pydantic model, a dict, ``sqlite3.Row``, a JWT's
    claims) the first of :data:`ID_FIELDS` is the distinct id and the first of
    :data:`ORGANISATION_FIELDS` the organisation. An organisation that cannot be read
    (a lazy relationship) is left out. Raises :class:`CallerNotRead` when no id is found.
    """
    if value is None or isinstance(value, Identity):
        return value
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return as_identity(value)
    if getattr(value, "is_authenticated", True) is False:
        return None
    distinct_id = _field(value, ID_FIELDS)
    if distinct_id is None:
        raise CallerNotRead(value)
    try:
        organisation = _field(value, ORGANISATION_FIELDS)
        if organisation is not None and not isinstance(organisation, (str, int)):
            organisation = _field(organisation, ID_FIELDS)
    except Exception:  # a relationship that needs a query, a closed session …
        organisation = None
    return Identity(
        str(distinct_id)[:MAX_ID_LENGTH],
        organisation=str(organisation)[:MAX_ID_LENGTH] if organisation is not None else None,
    )


def capture(value: Any) -> Identity | Exception | None:
    """:func:`read_caller`, its error returned rather than raised: it runs as the app
    attaches the value, and must never fail the app."""
    try:
        return read_caller(value)
    except Exception as exc:
        return exc


class Watched:
    """Request state that reads the caller as the app attaches it.

    ``captured`` maps each watched name the app set to what :func:`capture` returned.
    """

    __slots__ = ()
    captured: dict[str, Identity | Exception | None]


class WatchedState(Watched, dict[str, Any]):
    """The ASGI ``scope["state"]`` (what Starlette's ``request.state`` writes to)."""

    watching: frozenset[str] = frozenset()

    def __init__(self, initial: Any = (), watching: Iterable[str] = ()) -> None:
        dict.__init__(self, initial)
        self.watching = watching if isinstance(watching, frozenset) else frozenset(watching)
        self.captured = {}

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, value)
        if key in self.watching:
            self.captured[key] = capture(value)

    def __delitem__(self, key: str) -> None:
        dict.__delitem__(self, key)
        self.captured.pop(key, None)


def watching_class(base: type[_T], watching: Iterable[str]) -> type[_T]:
    """A subclass of ``base`` (an attribute namespace such as Flask's ``g``) that reads
    the caller when one of the ``watching`` attributes is set."""
    names = frozenset(watching)
    parent: Any = base

    class WatchingAttributes(Watched, parent):  # type: ignore[misc]
        __slots__ = ("captured",)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            parent.__init__(self, *args, **kwargs)
            object.__setattr__(self, "captured", {})

        def __setattr__(self, name: str, value: Any) -> None:
            parent.__setattr__(self, name, value)
            if name in names:
                self.captured[name] = capture(value)
                # The request's state is here from now on, for what needs the caller
                # before the request ends (feature flags).
                annotate(state=self)

        def __delattr__(self, name: str) -> None:
            parent.__delattr__(self, name)
            self.captured.pop(name, None)

    WatchingAttributes.__name__ = WatchingAttributes.__qualname__ = f"Watching{base.__name__}"
    WatchingAttributes.__module__ = base.__module__
    watching_type: type[_T] = WatchingAttributes
    return watching_type


_READS_LIKE_A_MAPPING: dict[type, bool] = {dict: True, WatchedState: True}


def _reads_like_a_mapping(state_type: type) -> bool:
    """Whether to read state with ``.get()`` (dicts, Flask's ``g``) rather than attributes.

    Runs on every request: a missing attribute of Flask's ``g`` raises and catches two
    exceptions in Python code, which measured as a third of the Flask adapter's cost.
    """
    known = _READS_LIKE_A_MAPPING.get(state_type)
    if known is None:
        known = issubclass(state_type, Mapping) or (
            callable(getattr(state_type, "get", None))
            and callable(getattr(state_type, "__contains__", None))
        )
        if len(_READS_LIKE_A_MAPPING) < 64:
            _READS_LIKE_A_MAPPING[state_type] = known
    return known


def identity_from_state(state: Any, scope: Any, attributes: Sequence[str]) -> Identity | None:
    """The caller of a request: the first of ``attributes`` of its state that names one
    (as read when it was attached, when the state is :class:`Watched`), else Starlette's
    ``scope["user"]``.

    Raises the first error met (:class:`CallerNotRead`, or what reading raised) when
    something was attached and no caller was found.
    """
    problem: Exception | None = None
    if state:
        captured = state.captured if isinstance(state, Watched) else None
        is_mapping = _reads_like_a_mapping(type(state))
        for attribute in attributes:
            if captured is not None and attribute in captured:
                found = captured[attribute]
            else:
                value = state.get(attribute) if is_mapping else getattr(state, attribute, None)
                if value is None:
                    continue
                found = capture(value)
            if isinstance(found, Identity):
                return found
            if found is not None and problem is None:
                problem = found
    user = scope.get("user") if type(scope) is dict else None
    if user is not None:
        try:
            return read_caller(user)
        except Exception as exc:
            problem = problem or exc
    if problem is not None:
        raise problem
    return None
