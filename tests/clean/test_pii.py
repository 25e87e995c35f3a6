"""PII masking: what must be masked, what must not (dates, versions, ISBNs), on real SMS too."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.clean.pii import KINDS, is_iban_valid, is_luhn_valid, mask_pii


def masked(text: str, kinds=tuple(KINDS)) -> tuple[str, dict[str, int]]:
    out = mask_pii(pl.LazyFrame({"text": [text]}), "text", list(kinds)).collect()
    return out["text"][0], {k.removeprefix("pii_"): out[k][0] for k in out.columns if k.startswith("pii_")}


@pytest.mark.parametrize(("text", "expected", "kind", "n"), [
    ("Write to jane.doe+news@mail.example.co.uk today.", "Write to <EMAIL> today.", "email", 1),
    ("Call 555-123-4567.", "Call <PHONE>.", "phone", 1),
    ("Call (555) 123-4567 or +44 20 7946 0958", "Call <PHONE> or <PHONE>", "phone", 2),
    ("UK: 020 7946 0958, mobile 07781482378", "UK: <PHONE>, mobile <PHONE>", "phone", 2),
    ("Numbers: 555-123-4567 555-987-6543", "Numbers: <PHONE> <PHONE>", "phone", 2),
    ("host 192.168.1.10,10.0.0.2 up", "host <IP_ADDRESS>,<IP_ADDRESS> up", "ipv4", 2),
    ("at 2001:db8::8a2e:370:7334 and fe80::1.", "at <IP_ADDRESS> and <IP_ADDRESS>.", "ipv6", 2),
    ("pay 4111 1111 1111 1111 or 378282246310005", "pay <CREDIT_CARD> or <CREDIT_CARD>", "credit_card", 2),
    ("IBAN GB82 WEST 1234 5698 7654 32 / DE89370400440532013000", "IBAN <IBAN> / <IBAN>", "iban", 2),
])
def test_masks_real_shapes(text, expected, kind, n):
    out, counts = masked(text)
    assert out == expected
    assert counts[kind] == n
    assert sum(counts.values()) == n


@pytest.mark.parametrize("text", [
    "Released on 2024-01-15 and 15/01/2024 at 12:30:45.",
    "Python 3.11.4, numpy 1.26.0, build 10.0.19041.1",
    "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2",
    "Order 4111 1111 1111 1112 fails Luhn; GB82WEST12345698765433 fails mod-97.",
    "Prices 1,234,567.89 and 100 000 000; ratio 3:2; C++ std::vector; dead:beef; add::",
    "pi is 3.14159265358979 and e is 2.718281828",
    "version v1.2.3.4 and 999.1.1.1 are not addresses",
])
def test_leaves_non_pii_alone(text):
    out, counts = masked(text)
    assert out == text
    assert sum(counts.values()) == 0


def test_checksums():
    frame = pl.DataFrame({"v": ["4111111111111111", "4111111111111112", "5500 0055 5555 5559"]})
    assert frame.select(is_luhn_valid(pl.col("v")).alias("ok"))["ok"].to_list() == [True, False, True]
    frame = pl.DataFrame({"v": ["GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 33", "FR1420041010050500013M02606"]})
    assert frame.select(is_iban_valid(pl.col("v")).alias("ok"))["ok"].to_list() == [True, False, True]


def test_only_enabled_kinds():
    out, counts = masked("mail a@b.org, call 555-123-4567", kinds=["email"])
    assert out == "mail <EMAIL>, call 555-123-4567"
    assert counts == {"email": 1}


def test_real_sms_phone_numbers(sms):
    out = mask_pii(sms.lazy(), "text", list(KINDS)).collect()
    by_id = dict(zip(sms["text"].to_list(), out["text"].to_list(), strict=True))
    spam = ("Had your mobile 11 months or more? U R entitled to Update to the latest colour mobiles "
            "with camera for Free! Call The Mobile Update Co FREE on 08002986030")
    assert by_id[spam].endswith("Co FREE on <PHONE>")
    assert out["pii_phone"].sum() > 350  # a few hundred spam messages give a number to call
    # ham messages are everyday talk: hardly any masks there
    ham = out.filter(pl.col("Label") == "ham")
    assert ham["pii_phone"].sum() < 15


@pytest.mark.parametrize(("text", "expected"), [
    # issue #17 item 9: real addresses from a mail archive that survived cleaning
    ("From: angel@Foghorn_Leghorn.coe.northeastern.edu (Angel)", "From: <EMAIL> (Angel)"),
    ("jjmartti@utu.fi__ wrote:", "<EMAIL> wrote:"),
    ("Reply to chris.doelle.@f3333.n106.z1.fidonet.org, please", "Reply to <EMAIL>, please"),
    # the rest of what a mail client delivers to
    ("bot 41898282+github-actions[bot]@users.noreply.github.com here", "bot <EMAIL> here"),
    ("ggl.20.jj...@spamgourmet.com", "<EMAIL>"),
    ("in [jane@example.org], <bob@x.example.com>; (carol@mail_relay.example.net).",
     "in [<EMAIL>], <<EMAIL>>; (<EMAIL>)."),
    ("idn user@example.xn--p1ai now", "idn <EMAIL> now"),
    ("End of sentence: jane@doe.com.", "End of sentence: <EMAIL>."),
    # a quoted local part and address literals (RFC 5321)
    ('write to "john doe"@example.com or "j@x"', 'write to <EMAIL> or "j@x"'),
    ("postmaster@[192.0.2.1] and root@[IPv6:2001:db8::1].", "<EMAIL> and <EMAIL>."),
])
def test_masks_what_a_mail_client_delivers_to(text, expected):
    out, counts = masked(text, ["email"])
    assert out == expected
    assert counts["email"] == expected.count("<EMAIL>")


@pytest.mark.parametrize("text", [
    "git commits by alanc@alf.(none) have no real host",  # git's placeholder: not deliverable
    "version 1.2@3 and user@localhost and @handle and a@b",
    "perl: my @list = (1, 2); foo@ bar.com",
])
def test_leaves_what_no_mail_client_delivers_to(text):
    out, counts = masked(text, ["email"])
    assert out == text and counts["email"] == 0
