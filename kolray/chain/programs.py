"""Program ids and well-known addresses that swap extraction needs.

The venue table lists the DEX programs of the recorded mainnet transactions; a few more venues
that KOL wallets route through are named too, so their trades are labelled rather than "unknown".
Only ids that are public and stable belong here: an id that is not in the table is still handled
(the swap is labelled ``"unknown"`` and keeps the program id), so a missing entry costs a label,
never a trade.
"""

from __future__ import annotations

from typing import Final

# Infrastructure: programs every transaction may call that never make a trade on their own.
SYSTEM_PROGRAM: Final = "11111111111111111111111111111111"
TOKEN_PROGRAM: Final = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022_PROGRAM: Final = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
ASSOCIATED_TOKEN_PROGRAM: Final = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"
COMPUTE_BUDGET_PROGRAM: Final = "ComputeBudget111111111111111111111111111111"
MEMO_PROGRAM: Final = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
MEMO_V1_PROGRAM: Final = "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"
ADDRESS_LOOKUP_TABLE_PROGRAM: Final = "AddressLookupTab1e1111111111111111111111111"
SYSVAR_INSTRUCTIONS: Final = "Sysvar1nstructions1111111111111111111111111"
TOKEN_METADATA_PROGRAM: Final = "metaqbxxUerdq28cj1RbAWkYQm3ybzjb6a8bt518x1s"

INFRASTRUCTURE: Final[frozenset[str]] = frozenset(
    {
        SYSTEM_PROGRAM,
        TOKEN_PROGRAM,
        TOKEN_2022_PROGRAM,
        ASSOCIATED_TOKEN_PROGRAM,
        COMPUTE_BUDGET_PROGRAM,
        MEMO_PROGRAM,
        MEMO_V1_PROGRAM,
        ADDRESS_LOOKUP_TABLE_PROGRAM,
        SYSVAR_INSTRUCTIONS,
        TOKEN_METADATA_PROGRAM,
    }
)
TOKEN_PROGRAMS: Final[frozenset[str]] = frozenset({TOKEN_PROGRAM, TOKEN_2022_PROGRAM})

# Venues
PUMPFUN: Final = "6EF8rrecthR5Dkzon8Nwu78hRvfCKubJ14M5uBEwF6P"
PUMPSWAP: Final = "pAMMBay6oceH9fJKBRHGP5D4bD4sWpmSwMn52FMfXEA"
JUPITER_V6: Final = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4"
JUPITER_DCA: Final = "DCA265Vj8a9CEuX1eb1LWRnDT7uK6q1xMipnNyatn23M"
RAYDIUM_AMM_V4: Final = "675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8"

VENUES: Final[dict[str, str]] = {
    # The shared fixture README's table (the names tests compare against).
    JUPITER_V6: "jupiter_v6",
    RAYDIUM_AMM_V4: "raydium_amm_v4",
    "CPMMoo8L3F4NbTegBCKVNunggL7H1ZpdTHKxQB5qKP1C": "raydium_cpmm",
    "CAMMCzo5YL8w4VFF8KVHrK22GGUsp5VTaW7grrKgrWqK": "raydium_clmm",
    "LanMV9sAd7wArD4vJFi2qDdfnVhFxYSUg6eADduJ3uj": "raydium_launchlab",
    PUMPFUN: "pumpfun",
    PUMPSWAP: "pumpswap",
    "whirLbMiicVdio4qvUfM5KAg6Ct8VwpYzGff3uctyCc": "orca_whirlpool",
    "LBUZKhRxPF3XUpBCjp4YzTKgLccjZhTSDM9YuVaPwxo": "meteora_dlmm",
    "Eo7WjKq67rjJQSZxS6z3YkapzY3eMj6Xy8X5EQVn5UaB": "meteora_damm_v1",
    "cpamdpZCGKUy5JxQXB4dcpGPiikHawvSWAd6mEn1sGG": "meteora_damm_v2",
    "dbcij3LWUppWqq96dh6gJWwBifmcGfLSB5D4DuSMaqN": "meteora_dbc",
    "6m2CDdhRgxpH4WjvdzxAYbGxwdGUz5MziiL5jek2kBma": "okx",
    "BSfD6SHZigAfDWSjzD5Q41jw8LmKwtmjskPH9XW1mrRW": "photon",
    # Other venues seen on KOL routes.
    "JUP4Fb2cqiRUcaTHdrPC8h2gNsA2ETXiPDD33WcGuJB": "jupiter_v4",
    JUPITER_DCA: "jupiter_dca",
    "jupoNjAxXgZ4rjzxzPMP4oxduvQsQtZzyknqvzYNrNu": "jupiter_limit",
    "5quBtoiQqxF9Jv6KYKctB59NT3gtJD2Y65kdnB1Uev3h": "raydium_stable",
    "9W959DqEETiGZocYWCQPaJ6sBmUzgfxXfqGeTEdp3aQP": "orca_v2",
    "DjVE6JNiYqPL2QXyCUUh8rNjHrbz9hXHNYt99MQ59qw1": "orca_v1",
    "2wT8Yq49kHgDzXuPxZSaeLaH1qbmGXtEyPy64bL7aD3c": "lifinity_v2",
    "PhoeNiXZ8ByJGLkxNfZRnkUfjvmuYqLR89jjFHGqdXY": "phoenix",
    "srmqPvymJeFKQ4zGQed1GFppgkRHL9kaELCbyksJtPX": "openbook_v1",
    "opnb2LAfJYbRMAHHvqjCwQxanZn7ReEHp1k81EohpZb": "openbook_v2",
    "SoLFiHG9TfgtdUXUjWAxi3LtvYuFyDLVhBWxdMZxyCe": "solfi",
    "HyaB3W9q6XdA5xwpU4XnSZV94htfmbmqJXZcEbRaJutt": "invariant",
    "obriQD1zbpyLz95G5n7nJe6a4DPjpFwa5XYPoNm113y": "obric_v2",
    "SSwpkEEcbUqx4vtoEByFjSkhKdCT862DNVb52nZg1UZ": "saber",
    "FLUXubRmkEi2q6K3Y9kBPg9248ggaZVsoSFhtJHSrm1X": "fluxbeam",
    "MoonCVVNZFSYkqNXP6bxHLPL6QQJiMagDL3qcqUQTrG": "moonshot",
    "boop8hVGQGqehUK2iVEMEnMrL5RbjywRzHKBmBE7ry4": "boop",
    "HEAVENoP2qxoeuF8Dj2oT1GHEnu49U5mJYkdeC8BAX2o": "heaven",
}

UNKNOWN_VENUE: Final = "unknown"

# Jito's eight tip accounts (any transfer to them is a tip, at any depth).
JITO_TIP_ACCOUNTS: Final[frozenset[str]] = frozenset(
    {
        "96gYZGLnJYVFmbjzopPSU6QiEV5fGqZNyN9nmNhvrZU5",
        "HFqU5x63VTqvQss8hp11i4wVV8bD44PvwucfZ2bU7gRe",
        "Cw8CFyM9FkoMi7K7Crf6HNQqf4uEMzpKw6QNghXLvLkY",
        "ADaUMid9yfUytqMBgopwjb2DTLSokTSzL1zt6iGPaS49",
        "DfXygSm4jCyNCybVYYK6DwvWqjKee8pbDmJGcLWNDXjh",
        "ADuUkR4vqLUMWXxW9gh6D6L8pMSawimctcNZ5pGwDcEt",
        "DttWaMuVvTiduZRnguLF7jNxTgiMBZ1hyAumKUiL2KRL",
        "3AVi9Tg9Uo68tJfuvoKvqKNWKkC5wPdSSdeBnizKZ6jT",
    }
)

# Mints
USDC_MINT: Final = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
USDT_MINT: Final = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"
PYUSD_MINT: Final = "2b1kV6DkPAnxd5ixfnxCpjxmKwqjjaYmCZfHsFu24GXo"
USD1_MINT: Final = "USD1ttGY1N17NEEHLmELoaybftRBUSErhqYiQzvEmuB"
STABLECOIN_MINTS: Final[frozenset[str]] = frozenset({USDC_MINT, USDT_MINT, PYUSD_MINT, USD1_MINT})

# pump.fun mints a fixed supply of 1e9 whole tokens at 6 decimals (Global.token_total_supply) and
# revokes the mint authority, so the supply of a pump.fun coin is known without asking the chain.
PUMPFUN_TOTAL_SUPPLY_RAW: Final = 1_000_000_000_000_000
