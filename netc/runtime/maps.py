"""Typed access to netc's maps: keys and values as dicts, encoded by the struct names of the
manifest's map specs (which name the C types of netc/abi.h).

    >>> codec("struct netc_addr_slot").decode(codec("struct netc_addr_slot").encode({"atom": 7, "klass": 2}))
    {'atom': 7, 'klass': 2}

The values of the four policy maps hold two slots (runtime/slots.py): they decode to
{"slot": [generation 0's value, generation 1's]}; netc_gen says which one is live.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from netc.runtime import abi

PAIRS = ("isolated", "default_deny", "audited")   # per direction: [ingress, egress]


@dataclass(frozen=True)
class Codec:
    layout: struct.Struct
    fields: tuple[str, ...]

    def encode(self, value: dict[str, Any]) -> bytes:
        out: list[Any] = []
        for name in self.fields:
            v = value.get(name, 0)
            if name == "addr":
                ip = ipaddress.ip_address(v) if isinstance(v, str) else None
                v = (b"\x00" * 10 + b"\xff\xff" + ip.packed) if ip and ip.version == 4 else \
                    (ip.packed if ip else v)
            elif name == "port":
                v = int(v).to_bytes(2, "big")
            elif name in PAIRS:
                out.extend(int(x) for x in v)
                continue
            out.append(v)
        return self.layout.pack(*out)

    def decode(self, raw: bytes) -> dict[str, Any]:
        vals = list(self.layout.unpack(raw))
        out: dict[str, Any] = {}
        for name in self.fields:
            if name in PAIRS:
                out[name] = [bool(vals.pop(0)), bool(vals.pop(0))]
                continue
            v = vals.pop(0)
            if name == "addr":
                v = _addr_text(v)
            elif name == "port":
                v = int.from_bytes(v, "big")
            out[name] = v
        return out


def _addr_text(raw: bytes) -> str:
    if raw[:12] == b"\x00" * 10 + b"\xff\xff":
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


@dataclass(frozen=True)
class SlotsCodec:
    """A value of two slots of `inner`, after `head` (fields outside the slots) if any."""

    inner: Codec
    head: Codec | None = None

    def encode(self, value: dict[str, Any]) -> bytes:
        slots = value.get("slot") or [{}, {}]
        return (self.head.encode(value) if self.head else b"") + b"".join(self.inner.encode(v) for v in slots)

    def decode(self, raw: bytes) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.head:
            out.update(self.head.decode(raw[:self.head.layout.size]))
            raw = raw[self.head.layout.size:]
        size = self.inner.layout.size
        out["slot"] = [self.inner.decode(raw[:size]), self.inner.decode(raw[size:2 * size])]
        return out


_VERDICT = Codec(abi.VERDICT, ("rank", "rule_id", "action", "flags", "pad", "audit_rule"))
_ADDR_SLOT = Codec(abi.ADDR_INFO, ("atom", "klass"))
CODECS: dict[str, Codec | SlotsCodec] = {
    "__u32": Codec(struct.Struct("<I"), ("value",)),
    "struct netc_endpoint": SlotsCodec(
        Codec(abi.ENDPOINT_POLICY, ("pset", "isolated", "default_deny", "audited", "observe", "sample")),
        Codec(struct.Struct("<IB3x"), ("endpoint_id", "tracked"))),
    "struct netc_addr_key": Codec(abi.ADDR_KEY, ("prefixlen", "addr")),
    "struct netc_addr_slot": _ADDR_SLOT,
    "struct netc_addr_info": SlotsCodec(_ADDR_SLOT),
    "struct netc_rule_key": Codec(abi.RULE_KEY, ("prefixlen", "pset", "atom", "dir", "proto", "port")),
    "struct netc_wild_key": Codec(abi.WILD_KEY, ("prefixlen", "pset", "dir", "klass", "proto", "pad", "port")),
    "struct netc_verdict": _VERDICT,
    "struct netc_verdicts": SlotsCodec(_VERDICT),
}


def codec(c_type: str) -> Codec | SlotsCodec:
    try:
        return CODECS[c_type]
    except KeyError:
        raise KeyError(f"no codec for {c_type}; netc/runtime/maps.py knows {sorted(CODECS)}") from None


class TypedMap:
    """A Map whose keys and values are dicts, per the manifest's MapSpec."""

    def __init__(self, raw: Any, spec: dict[str, Any]):
        self.raw = raw
        self.key = codec(spec["key_struct"])
        self.value = codec(spec["value_struct"])

    def lookup(self, key: dict[str, Any]) -> dict[str, Any] | None:
        got = self.raw.lookup(self.key.encode(key))
        return None if got is None else self.value.decode(got)

    def update(self, key: dict[str, Any], value: dict[str, Any]) -> None:
        self.raw.update(self.key.encode(key), self.value.encode(value))

    def delete(self, key: dict[str, Any]) -> bool:
        return bool(self.raw.delete(self.key.encode(key)))

    def items(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        for k, v in self.raw.items():
            yield self.key.decode(k), self.value.decode(v)
