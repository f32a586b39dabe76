"""The inventory: sites, their hosts, connection settings, and host selectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

from orchestrator.errors import Problem, ValidationError
from orchestrator.model.fields import Fields, Located, as_mapping, load_document, suggest
from orchestrator.model.names import NAME_RULE, bad_name
from orchestrator.transport.base import HostSpec

CONTROL = "control"
#: Connection settings that may be set in defaults, on a site or on a host (most specific wins).
CONNECTION_FIELDS = (
    "transport",
    "user",
    "port",
    "identity_file",
    "known_hosts",
    "host_key_policy",
    "connect_timeout",
    "proxy_jump",
    "ssh_config",
    "env",
)
SITE_ALIASES = ("source", "target", "active")
INVENTORY_FIELDS = ("active", "defaults", "vars", "sites", "notify")
SITE_FIELDS = ("vars", "hosts", *CONNECTION_FIELDS)
HOST_FIELDS = ("address", "roles", "vars", *CONNECTION_FIELDS)


class HostKeyPolicy(StrEnum):
    STRICT = "strict"
    ACCEPT_NEW = "accept-new"
    IGNORE = "ignore"


class TransportKind(StrEnum):
    SSH = "ssh"
    LOCAL = "local"


@dataclass(frozen=True)
class Host:
    """One host of the inventory; ``spec`` holds its merged connection settings."""

    name: str
    site: str | None  # None for ``control``
    address: str
    roles: tuple[str, ...]
    vars: dict[str, Any]
    spec: HostSpec
    line: int = 0

    @property
    def port(self) -> int:
        return self.spec.port

    @cached_property
    def view(self) -> dict[str, Any]:
        """The host as seen by templates (see ``as_dict``)."""
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "roles": list(self.roles),
            "site": self.site,
            "vars": self.vars,
        }

    @property
    def user(self) -> str:
        return self.spec.user


@dataclass(frozen=True)
class Site:
    name: str
    vars: dict[str, Any]
    hosts: tuple[Host, ...]
    line: int = 0

    @cached_property
    def view(self) -> dict[str, Any]:
        """The site as seen by templates (see ``site_dict``)."""
        return {"name": self.name, "vars": self.vars, "hosts": [h.view for h in self.hosts]}


@dataclass
class Inventory:
    path: str
    active: str
    vars: dict[str, Any]
    sites: dict[str, Site]
    hosts: dict[str, Host]  # every host (not control), in inventory order
    control: Host
    order: dict[str, int] = field(default_factory=dict)  # host name → position, control first
    #: notification URLs (templates), added to the runbook's
    notify: list[Located] = field(default_factory=list)

    def host(self, name: str) -> Host:
        return self.control if name == CONTROL else self.hosts[name]


@dataclass(frozen=True)
class Selector:
    """A parsed host selector: ``control``, a host name, ``ROLE@SITE`` or ``@SITE``."""

    text: str
    host: str | None = None
    role: str | None = None
    site: str | None = None

    @classmethod
    def parse(cls, text: str) -> Selector:
        if "@" in text:
            role, _, site = text.partition("@")
            return cls(text, role=role or None, site=site)
        return cls(text, host=text)


class SelectorError(ValueError):
    """A selector names an unknown site or matches no host."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def select(inventory: Inventory, text: str, aliases: dict[str, str]) -> list[Host]:
    """Hosts matched by selector ``text`` (inventory order); ``aliases`` maps source/target/active
    to site names. Raise SelectorError if it names an unknown site/host or matches nothing."""
    sel = Selector.parse(text.strip())
    if sel.host is not None:
        if sel.host == CONTROL:
            return [inventory.control]
        if sel.host in inventory.hosts:
            return [inventory.hosts[sel.host]]
        raise SelectorError(
            f"selector '{text}' matches no host",
            suggest(sel.host, [*inventory.hosts, CONTROL]),
        )
    assert sel.site is not None
    site_name = aliases.get(sel.site, sel.site)
    if site_name not in inventory.sites:
        raise SelectorError(
            f"selector '{text}' names unknown site '{sel.site}'",
            suggest(sel.site, [*inventory.sites, *SITE_ALIASES]),
        )
    hosts = [h for h in inventory.sites[site_name].hosts if sel.role is None or sel.role in h.roles]
    if not hosts:
        roles = sorted({r for h in inventory.sites[site_name].hosts for r in h.roles})
        hint = suggest(sel.role or "", roles) or (
            f"roles at {site_name}: {', '.join(roles)}" if roles else None
        )
        raise SelectorError(
            f"selector '{text}' matches no host (no role '{sel.role}' at site '{site_name}')", hint
        )
    return hosts


def _connection(fields: Fields, inherited: dict[str, Any]) -> dict[str, Any]:
    """Merge this level's connection settings over ``inherited``, recording bad values.
    ``merged["explicit"]`` is the set of settings written at this level or above (the SSH
    config fills in only the others)."""
    merged = dict(inherited)
    data = fields.data
    merged["explicit"] = set(inherited.get("explicit", ())) | {
        k for k in data if k in CONNECTION_FIELDS and data[k] is not None
    }
    if "transport" in data:
        value = fields.string("transport")
        if value is not None and value not in {t.value for t in TransportKind}:
            fields.error("transport", f"transport must be ssh or local, not '{value}'")
        elif value is not None:
            merged["transport"] = value
    for key in ("user", "identity_file", "known_hosts"):
        if key in data:
            merged[key] = fields.string(key, merged.get(key))
    if "proxy_jump" in data:
        merged["proxy_jump"] = fields.string("proxy_jump")
    if "ssh_config" in data:
        merged["ssh_config"] = fields.string("ssh_config")
        merged["ssh_config_line"] = fields.line("ssh_config")
    if "port" in data:
        port = fields.integer("port", merged.get("port"), minimum=1)
        if isinstance(port, int) and port > 65535:
            fields.error("port", "port must be at most 65535")
        else:
            merged["port"] = port
    if "host_key_policy" in data:
        value = fields.string("host_key_policy")
        if value is not None and value not in {p.value for p in HostKeyPolicy}:
            fields.error(
                "host_key_policy",
                f"host_key_policy must be strict, accept-new or ignore, not '{value}'",
                suggest(value, [p.value for p in HostKeyPolicy]),
            )
        elif value is not None:
            merged["host_key_policy"] = value
    if "connect_timeout" in data:
        merged["connect_timeout"] = fields.duration("connect_timeout", merged["connect_timeout"])
    if "env" in data:
        merged["env"] = {**merged.get("env", {}), **fields.env()}
    return merged


def _with_ssh_config(
    conn: dict[str, Any], address: str | None, host_name: str, hf: Fields, base: Path
) -> tuple[dict[str, Any], str | None]:
    """Apply the SSH config (the inventory's ``ssh_config`` or ``~/.ssh/config``) to one host:
    settings the inventory leaves unset come from the config's entry for its address (or, with
    no address, for its name when the config knows that name)."""
    from orchestrator.model import ssh_config

    named = conn.get("ssh_config")
    path = ssh_config.config_path(named, base)
    try:
        config = ssh_config.load(path, required=named is not None)
        alias = address
        if alias is None and ssh_config.resolve(config, host_name).matched:
            alias = host_name
        if alias is None:
            return conn, None
        merged, resolved = ssh_config.apply(conn, conn.get("explicit", set()), alias, config)
    except ssh_config.SSHConfigError as exc:
        line = conn.get("ssh_config_line") if named is not None else None
        problem = hf.where.problem(line, str(exc))
        if problem not in hf.problems:  # one file, many hosts: say it once
            hf.problems.append(problem)
        return conn, address
    return merged, resolved


_DEFAULTS: dict[str, Any] = {
    "transport": "ssh",
    "user": "root",
    "port": 22,
    "identity_file": None,
    "known_hosts": "~/.ssh/known_hosts",
    "host_key_policy": "strict",
    "connect_timeout": 10.0,
    "proxy_jump": None,
    "ssh_config": None,
    "env": {},
}


def load_inventory(path: str | Path) -> Inventory:
    """Load and validate an inventory file; raise ValidationError listing every problem."""
    inventory, problems = parse_inventory(path)
    if any(p.severity == "error" for p in problems) or inventory is None:
        raise ValidationError(problems)
    return inventory


def parse_inventory(path: str | Path) -> tuple[Inventory | None, list[Problem]]:
    """Load an inventory, returning it (None if unusable) and every problem found."""
    f, where, problems = load_document(path, "inventory")
    if f is None:
        return None, problems
    top, file = f.data, where.file
    f.check_known(INVENTORY_FIELDS)
    defaults_map = f.mapping("defaults")
    df = Fields(defaults_map, where, problems, "defaults")
    df.check_known(CONNECTION_FIELDS)
    defaults = _connection(df, _DEFAULTS)
    global_vars = dict(f.mapping("vars"))
    sites_map = f.mapping("sites")
    sites: dict[str, Site] = {}
    hosts: dict[str, Host] = {}
    host_lines: dict[str, tuple[str, int]] = {}
    for site_name, site_data in sites_map.items():
        site_line = sites_map.line_of(site_name)
        if (message := bad_name("site", site_name)) is not None:
            problems.append(where.problem(site_line, message, NAME_RULE))
        elif site_name in SITE_ALIASES or site_name == CONTROL:
            problems.append(
                where.problem(
                    site_line,
                    f"the site name '{site_name}' is reserved: selectors use it as an alias "
                    "(source, target, active) or for the controller (control)",
                    "rename the site",
                )
            )
        sm = as_mapping(site_data, where, site_line, f"site '{site_name}'", problems)
        sf = Fields(sm, where, problems, f"site '{site_name}'")
        sf.check_known(SITE_FIELDS)
        site_conn = _connection(sf, defaults)
        site_hosts: list[Host] = []
        hosts_map = sf.mapping("hosts")
        if not hosts_map:
            problems.append(where.problem(site_line, f"site '{site_name}' has no hosts"))
        for host_name, host_data in hosts_map.items():
            line = hosts_map.line_of(host_name)
            hm = as_mapping(host_data, where, line, f"host '{host_name}'", problems)
            hf = Fields(hm, where, problems, f"host '{host_name}'")
            hf.check_known(HOST_FIELDS)
            if (message := bad_name("host", host_name)) is not None:
                problems.append(where.problem(line, message, NAME_RULE))
                continue
            if host_name == CONTROL:
                problems.append(
                    where.problem(
                        line,
                        "the host name 'control' is reserved for the machine running drx",
                        "rename the host",
                    )
                )
                continue
            if host_name in host_lines:
                other_site, other_line = host_lines[host_name]
                problems.append(
                    where.problem(
                        line,
                        f"duplicate host name '{host_name}' (also in site '{other_site}' "
                        f"on line {other_line}); host names must be unique across sites",
                    )
                )
                continue
            host_lines[host_name] = (site_name, line)
            conn = _connection(hf, site_conn)
            address = hf.text("address")
            if conn["transport"] == "ssh":
                conn, address = _with_ssh_config(conn, address, host_name, hf, Path(file).parent)
            for key in ("explicit", "ssh_config", "ssh_config_line"):
                conn.pop(key, None)
            if address is None and conn["transport"] == "ssh":
                hf.error(
                    None,
                    f"host '{host_name}' has no address (required with transport ssh)",
                    "give it an address, or name it after a Host of the SSH config",
                )
            host = Host(
                name=host_name,
                site=site_name,
                address=address or "localhost",
                roles=tuple(hf.str_list("roles")),
                vars=dict(hf.mapping("vars")),
                spec=HostSpec(name=host_name, address=address or "localhost", **conn),
                line=line,
            )
            site_hosts.append(host)
            hosts[host_name] = host
        sites[site_name] = Site(site_name, dict(sf.mapping("vars")), tuple(site_hosts), site_line)
    if len(sites) < 2 and "sites" in top:
        problems.append(
            where.problem(
                f.line("sites"), f"an inventory needs at least two sites, found {len(sites)}"
            )
        )
    elif "sites" not in top:
        f.error(None, "missing required field 'sites' in the inventory")
    active = f.string("active")
    if active is None:
        f.error(None, "missing required field 'active' in the inventory")
    elif sites and active not in sites:
        f.error(
            "active",
            f"active site '{active}' is not a site of this inventory (sites: {', '.join(sites)})",
            suggest(active, sites),
        )
    control = Host(
        name=CONTROL,
        site=None,
        address="localhost",
        roles=(),
        vars={},
        spec=HostSpec(name=CONTROL, address="localhost", transport="local", env=defaults["env"]),
    )
    order = {CONTROL: 0} | {name: i + 1 for i, name in enumerate(hosts)}
    inv = Inventory(
        file, active or "", global_vars, sites, hosts, control, order, f.located_list("notify")
    )
    return inv, problems


def as_dict(host: Host) -> dict[str, Any]:
    """The host as seen by templates: ``.name .address .port .user .roles .site .vars``.

    Built once per host and shared: templates run in an immutable sandbox, so they cannot
    change it, and a plan renders thousands of commands that each look hosts up."""
    return host.view


def site_dict(inventory: Inventory, name: str) -> dict[str, Any]:
    """The site as seen by templates (``site(name)``): ``.name .vars .hosts``; shared likewise."""
    return inventory.sites[name].view
