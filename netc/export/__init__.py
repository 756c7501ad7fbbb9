"""netc's policy as a ruleset for the kernel's own firewalls: nftables and iptables.

For people migrating to or from netc, and for comparing the two. Both exports enforce where netc
does: on the containers' host-side veths in the node's namespace (docs/export.md).

    >>> from netc.api import check
    >>> from netc.runtime.inventory import Container, Inventory
    >>> prog = check('group web = app == "web"\\npolicy p for web { ingress default deny }').program
    >>> inv = Inventory([Container("web-1", ("10.0.0.5",), {"app": "web"}, interface="veth1")])
    >>> "drop" in export_nftables(prog, inv)
    True
"""

from __future__ import annotations

from netc.export.iptables import combined, export_iptables
from netc.export.model import ExportError
from netc.export.nftables import export_nftables

__all__ = ["ExportError", "combined", "export_iptables", "export_nftables"]
