"""`netc trace drops` without the kernel: the tracepoint format and BTF readers, the event decoder,
and the messages that say why bcc cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from netc.observe import trace as T

FORMAT = """name: kfree_skb
ID: 2310
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 62, "TC_EGRESS" }, { 73, "TC_INGRESS" }, { 128, "MAX" })
"""

BTF = """[1] INT 'unsigned int' size=4 bits_offset=0 nr_bits=32 encoding=(none)
[2] STRUCT 'sk_buff' size=224 vlen=4
\t'(anon)' type_id=3 bits_offset=0
\t'sk' type_id=9 bits_offset=192
\t'len' type_id=1 bits_offset=896
\t'(anon)' type_id=6 bits_offset=1024
[3] UNION '(anon)' size=24 vlen=1
\t'(anon)' type_id=4 bits_offset=0
[4] STRUCT '(anon)' size=24 vlen=3
\t'next' type_id=9 bits_offset=0
\t'prev' type_id=9 bits_offset=64
\t'(anon)' type_id=5 bits_offset=128
[5] UNION '(anon)' size=8 vlen=2
\t'dev' type_id=9 bits_offset=0
\t'dev_scratch' type_id=9 bits_offset=0
[6] STRUCT '(anon)' size=8 vlen=1
\t'network_header' type_id=1 bits_offset=32
[7] TYPEDEF 'possible_net_t' type_id=8
[8] STRUCT '(anon)' size=8 vlen=1
\t'net' type_id=9 bits_offset=0
[9] PTR '(anon)' type_id=0
[10] STRUCT 'net_device' size=2496 vlen=2
\t'ifindex' type_id=1 bits_offset=1792
\t'nd_net' type_id=7 bits_offset=2112
[11] ENUM 'skb_drop_reason' encoding=UNSIGNED size=4 vlen=2
\t'SKB_DROP_REASON_NOT_SPECIFIED' val=2
\t'SKB_DROP_REASON_TC_INGRESS' val=73
"""


def test_tracepoint_format(tmp_path: Path) -> None:
    p = tmp_path / "format"
    p.write_text(FORMAT)
    fmt = T.read_format(str(p))
    assert fmt.fields["skbaddr"] == (8, 8) and fmt.fields["reason"] == (36, 4)
    assert fmt.fields["protocol"] == (32, 2) and fmt.size == 40
    assert fmt.reasons == {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 62: "TC_EGRESS", 73: "TC_INGRESS", 128: "MAX"}
    p.write_text(FORMAT.replace("location", "where"))
    with pytest.raises(T.TraceError, match="no `location` field"):
        T.read_format(str(p))


def test_btf_offsets_through_anonymous_members_and_typedefs() -> None:
    btf = T.Btf(BTF)
    assert btf.offset("sk_buff", "dev") == 16          # union in a struct in a union
    assert btf.offset("sk_buff", "sk") == 24
    assert btf.offset("sk_buff", "network_header") == 132
    assert btf.offset("net_device", "nd_net.net") == 264
    with pytest.raises(T.TraceError, match="no member nope"):
        btf.offset("sk_buff", "nope")
    with pytest.raises(T.TraceError, match="no struct sock"):
        btf.offset("sock", "x")


def test_reason_names_from_the_format_or_btf(tmp_path: Path) -> None:
    p = tmp_path / "format"
    p.write_text(FORMAT)
    assert T.reason_names(T.read_format(str(p)), None)[62] == "TC_EGRESS"
    p.write_text(FORMAT.split("print fmt")[0])
    assert T.reason_names(T.read_format(str(p)), T.Btf(BTF)) == {2: "NOT_SPECIFIED", 73: "TC_INGRESS"}


def _watch() -> T.Watch:
    w = T.Watch("lab demo-1", [T.WatchEntry("web-1", "host", "/run/netns/n", 111, 5, "nc1"),
                               T.WatchEntry("web-1", "container", "/run/netns/w", 222, 0, "*")])
    w.netc_interfaces.add((111, 5))
    return w


def _raw(reason: int, inum: int, ifindex: int, entry: int, family: int = 4, l4: int = 6) -> bytes:
    return T.EVENT.pack(10**9, 0xffffffff81000000, reason, inum, ifindex, 74, entry, 0x0800, l4, family,
                        bytes([10, 77, 0, 13]) + bytes(12), bytes([10, 77, 0, 10]) + bytes(12), 40000, 22,
                        b"nc1".ljust(16, b"\0"))


def test_decoding_tells_netc_drops_from_kernel_drops() -> None:
    tr = T.DropTracer(_watch())
    tr.reasons = {62: "TC_EGRESS", 3: "NO_SOCKET"}
    tr._mono0, tr._wall0 = 2 * 10**9, 1000.0
    netc = tr.decode(_raw(62, 111, 5, 0))
    assert (netc.kind, netc.reason, netc.container, netc.side) == ("netc", "TC_EGRESS", "web-1", "host")
    assert (netc.protocol, netc.src, netc.sport, netc.dst, netc.dport) == ("tcp", "10.77.0.13", 40000, "10.77.0.10", 22)
    assert netc.time == 999.0 and netc.to_json()["kind_text"] == "netc (tc) drop"
    kernel = tr.decode(_raw(3, 222, 9, 1))
    assert (kernel.kind, kernel.reason, kernel.side) == ("kernel", "NO_SOCKET", "container")
    other_tc = tr.decode(_raw(62, 222, 9, 1))          # a tc program in the container's namespace: not netc
    assert other_tc.kind == "tc" and other_tc.to_json()["kind_text"] == "tc drop (not netc)"
    unknown = tr.decode(_raw(999, 222, 9, 1, family=0))
    assert unknown.reason == "reason 999" and unknown.src is None
    assert "(no IP header)" in T.format_drop(unknown)
    line = T.format_drop(netc)
    assert "netc (tc) drop" in line and "tcp 10.77.0.13:40000 -> 10.77.0.10:22" in line


def test_program_text_gets_its_offsets_from_btf_and_the_format(tmp_path: Path) -> None:
    p = tmp_path / "format"
    p.write_text(FORMAT)
    btf = T.Btf((BTF + """[20] STRUCT 'net' size=4288 vlen=1
\t'ns' type_id=21 bits_offset=1216
[21] STRUCT 'ns_common' size=80 vlen=1
\t'inum' type_id=1 bits_offset=192
[22] STRUCT 'sock' size=800 vlen=1
\t'__sk_common' type_id=23 bits_offset=0
[23] STRUCT 'sock_common' size=136 vlen=1
\t'skc_net' type_id=7 bits_offset=384
""").replace("[2] STRUCT 'sk_buff' size=224 vlen=4", "[2] STRUCT 'sk_buff' size=224 vlen=5")
        .replace("\t'(anon)' type_id=6 bits_offset=1024\n", "\t'(anon)' type_id=6 bits_offset=1024\n\t'head' type_id=9 bits_offset=1536\n")
        .replace("[10] STRUCT 'net_device' size=2496 vlen=2", "[10] STRUCT 'net_device' size=2496 vlen=3")
        .replace("\t'nd_net' type_id=7 bits_offset=2112\n", "\t'nd_net' type_id=7 bits_offset=2112\n\t'name' type_id=1 bits_offset=2240\n"))
    text = T.program_text(T.read_format(str(p)), btf)
    assert "#define OFF_SKB_DEV 16\n" in text and "#define OFF_NET_INUM 176\n" in text
    assert "#define OFF_SK_NET 48\n" in text and "#define TP_REASON 36\n" in text


def test_without_bcc_the_command_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(T, "BCC_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.delitem(__import__("sys").modules, "bcc", raising=False)
    with pytest.raises(T.TraceError, match="bcc is not installed.*python3-bpfcc"):
        T.import_bcc()


def test_without_kernel_headers_the_error_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(T.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(T.os.path, "isdir", lambda p: False)
    with pytest.raises(T.TraceError, match="install linux-headers-amd64"):
        T.kernel_headers()


def test_header_overlay_merges_the_split_packages(tmp_path: Path) -> None:
    arch, common = tmp_path / "arch", tmp_path / "common"
    (arch / "include" / "generated").mkdir(parents=True)
    (arch / "Makefile").write_text("arch")
    (common / "include" / "linux").mkdir(parents=True)
    (common / "include" / "linux" / "kconfig.h").write_text("")
    (common / "Makefile").write_text("common")
    T._overlay([str(arch), str(common)], str(tmp_path / "out"))
    out = tmp_path / "out"
    assert (out / "include" / "generated").is_dir() and (out / "include" / "linux" / "kconfig.h").exists()
    assert (out / "Makefile").read_text() == "arch"        # the arch package wins


def test_the_command_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from netc.observe.cli import trace

    monkeypatch.setenv("NETC_STATE_DIR", str(tmp_path))
    r = CliRunner().invoke(trace, ["drops", "--lab", "nope", "--duration", "1"])
    assert r.exit_code == 1 and r.output.startswith("netc: error: no lab named `nope`"), r.output
    r = CliRunner().invoke(trace, ["drops", "--duration", "1"])
    assert r.exit_code == 1 and "nothing to watch" in r.output, r.output
    r = CliRunner().invoke(trace, ["drops", "--target", "a", "--lab", "b"])
    assert r.exit_code == 1 and "either --target or --lab" in r.output
