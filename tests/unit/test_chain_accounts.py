"""Account layouts: bytes built by hand to the published layouts decode to the right reserves and
prices; anything else is refused with a reason, never read as a price."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from solders.pubkey import Pubkey

from kolray.chain.accounts import (
    AccountLayoutError,
    BondingCurve,
    PumpSwapPool,
    RaydiumAmm,
    TokenAccount,
    account_bytes,
    account_info,
    bonding_curve_address,
    canonical_pumpswap_pool,
    decode_bonding_curve,
    decode_pumpswap_pool,
    decode_raydium_amm,
    decode_token_account,
    encode_bonding_curve,
    encode_pumpswap_pool,
    encode_raydium_amm,
    encode_token_account,
)
from kolray.chain.programs import PUMPFUN, PUMPSWAP, TOKEN_PROGRAM
from kolray.chain.types import WSOL_MINT

MINT = "7k2255ueF3Ecnnjf9odEu7so3gmXKS8E29atDWmFpump"
CURVE = "9A5TEByiBsj1RXZfe6cDr3tLn89vXtrZ11QsFWf13Njm"  # MINT's curve, and a key to stand in for a creator


def key(n: int) -> str:
    return str(Pubkey.from_bytes(hashlib.sha256(str(n).encode()).digest()))


def raw(address: str) -> bytes:
    return bytes(Pubkey.from_string(address))


def curve_bytes(
    vt: int, vs: int, rt: int, rs: int, supply: int, complete: bool, creator: str | None
) -> bytes:
    head = hashlib.sha256(b"account:BondingCurve").digest()[:8]
    body = head + struct.pack("<QQQQQB", vt, vs, rt, rs, supply, complete)
    return body + (raw(creator) if creator else b"")


def test_a_bonding_curve_decodes_to_its_reserves_and_price() -> None:
    # A fresh pump.fun curve: 30 SOL and 1.073 billion tokens virtual, 793.1 million real.
    data = curve_bytes(1_073_000_000_000_000, 30_000_000_000, 793_100_000_000_000, 0, 10**15, False, CURVE)
    curve = decode_bonding_curve(data.ljust(150, b"\0"))
    assert curve == BondingCurve(
        1_073_000_000_000_000, 30_000_000_000, 793_100_000_000_000, 0, 10**15, False, CURVE
    )
    assert curve.price_sol() == pytest.approx(30 / 1_073_000_000)  # SOL per whole token, ~28 SOL market cap


def test_an_old_curve_without_a_creator_still_decodes() -> None:
    curve = decode_bonding_curve(curve_bytes(10**15, 85 * 10**9, 0, 0, 10**15, True, None))
    assert curve.complete and curve.creator is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\0" * 49, "discriminator"),
        (curve_bytes(1, 1, 0, 0, 1, False, None)[:40], "40 bytes"),
        (hashlib.sha256(b"account:Pool").digest()[:8] + b"\0" * 300, "discriminator"),
    ],
)
def test_bytes_of_another_layout_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(AccountLayoutError, match=reason):
        decode_bonding_curve(data)


def test_a_pumpswap_pool_decodes_to_its_vaults() -> None:
    pool_keys = [key(i) for i in range(6)]
    body = hashlib.sha256(b"account:Pool").digest()[:8] + struct.pack("<BH", 254, 0)
    body += b"".join(raw(k) for k in pool_keys) + struct.pack("<Q", 4_000_000) + raw(CURVE)
    pool = decode_pumpswap_pool(body.ljust(300, b"\0"))
    assert pool == PumpSwapPool(254, 0, *pool_keys, 4_000_000, CURVE)


def test_a_raydium_amm_decodes_its_vaults_mints_and_pending_pnl() -> None:
    u64s = [0] * 32
    u64s[4], u64s[5], u64s[24], u64s[25] = 6, 9, 123, 456
    body = struct.pack("<32Q", *u64s).ljust(336, b"\0") + b"".join(raw(key(i)) for i in range(4))
    amm = decode_raydium_amm(body.ljust(752, b"\0"))
    assert amm == RaydiumAmm(6, 9, 123, 456, key(0), key(1), key(2), key(3))
    with pytest.raises(AccountLayoutError, match="752"):
        decode_raydium_amm(body)


def test_a_token_account_decodes_its_mint_owner_and_amount() -> None:
    data = raw(MINT) + raw(CURVE) + struct.pack("<Q", 5_000_000) + b"\0" * 36 + b"\x01" + b"\0" * 56
    assert decode_token_account(data) == TokenAccount(MINT, CURVE, 5_000_000)
    with pytest.raises(AccountLayoutError, match="uninitialised"):
        decode_token_account(data[:108] + b"\0" + data[109:])


def test_what_the_twin_encodes_reads_back_through_the_same_decoders() -> None:
    curve = BondingCurve(
        900_000_000_000_000, 35_000_000_000, 620_000_000_000_000, 5_000_000_000, 10**15, False, CURVE
    )
    pool = PumpSwapPool(255, 0, key(1), MINT, WSOL_MINT, key(2), key(3), key(4), 10**12, CURVE)
    amm = RaydiumAmm(6, 9, 0, 7, key(5), key(6), MINT, WSOL_MINT)
    vault = TokenAccount(MINT, key(1), 123_456_789)
    assert decode_bonding_curve(encode_bonding_curve(curve)) == curve
    assert decode_pumpswap_pool(encode_pumpswap_pool(pool)) == pool
    assert decode_raydium_amm(encode_raydium_amm(amm)) == amm
    assert decode_token_account(encode_token_account(vault)) == vault
    assert len(encode_bonding_curve(curve)) == 150 and len(encode_pumpswap_pool(pool)) == 300


def test_addresses_are_the_programs_own_pdas_on_mainnet() -> None:
    # From ../shared/fixtures/mainnet: pumpfun_buy_2ghHZXwy (mint → curve) and pumpswap_buy_2ffHb9AX
    # (mint → the pool its buy traded on, the canonical one).
    assert bonding_curve_address(MINT) == CURVE
    assert canonical_pumpswap_pool("npB9cxTzwUiGt7jk2dXZa52xZve8SgVD6Et9Bpipump") == (
        "Ef7wUrbarRXHNMMgBs8cstSkzRttnstjMsniaq7zMp6j"
    )


def test_rpc_values_are_checked_for_owner_and_encoding() -> None:
    data = encode_token_account(TokenAccount(MINT, key(1), 1))
    assert account_bytes(account_info(data, TOKEN_PROGRAM), TOKEN_PROGRAM) == data
    assert account_bytes(None, PUMPFUN) is None  # no such account
    with pytest.raises(AccountLayoutError, match="owned by"):
        account_bytes(account_info(data, TOKEN_PROGRAM), PUMPSWAP)
    with pytest.raises(AccountLayoutError, match="base64"):
        account_bytes({"owner": PUMPFUN, "data": [base64.b64encode(data).decode(), "base58"]}, PUMPFUN)
    with pytest.raises(AccountLayoutError, match="not valid base64"):
        account_bytes({"owner": PUMPFUN, "data": ["@@@", "base64"]}, PUMPFUN)
