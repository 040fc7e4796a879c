"""Polling one wallet: oldest first, in batches, never past a transaction that was not read."""

import pytest

from kolray.chain.swaps import MalformedTransaction
from kolray.chain.types import Swap
from kolray.tracker import poller
from kolray.tracker.poller import PollPolicy, SignatureRef, poll_wallet
from kolray.tracker.store import CommitResult, WalletProgress

WALLET = "AG27WXxPym3K73JFKtpRxwbMfnRnuPu5bn6juzcvq5rp"


def swap(sig: str) -> Swap:
    return Swap(sig, 1, 1, WALLET, "MINT", "buy", 10, 6, 1000, "pumpfun")


class FakeChain:
    """Signatures s0 (oldest) .. s{n-1}; a transaction is {"swaps": [...]} or None (not available)."""

    def __init__(self, txs: dict[str, dict | None], failed: set[str] = frozenset()):
        self.txs = txs
        self.failed = failed
        self.fetched: list[str] = []
        self.listed: list[tuple] = []

    async def signatures(self, wallet, until, not_before, max_count):
        self.listed.append((until, not_before, max_count))
        order = list(self.txs)
        newer = order[order.index(until) + 1 :] if until else order
        if max_count is not None:
            newer = newer[-max_count:]
        return [SignatureRef(s, i, 1000 + i, s in self.failed) for i, s in reversed(list(enumerate(newer)))]

    async def transactions(self, signatures):
        self.fetched.extend(signatures)
        return [self.txs[s] for s in signatures]


class Recorder:
    def __init__(self, refuse_after: int | None = None):
        self.commits: list[WalletProgress] = []
        self.refuse_after = refuse_after

    async def __call__(self, progress: WalletProgress) -> CommitResult:
        if self.refuse_after is not None and len(self.commits) >= self.refuse_after:
            return CommitResult(progress.wallet, False, reason="cursor moved")
        self.commits.append(progress)
        return CommitResult(progress.wallet, True, swaps_inserted=len(progress.swaps))


@pytest.fixture(autouse=True)
def fake_extraction(monkeypatch: pytest.MonkeyPatch) -> None:
    def extract(tx: dict, wallet: str) -> list[Swap]:
        if tx.get("malformed"):
            raise MalformedTransaction("accountKeys missing")
        return tx["swaps"]

    monkeypatch.setattr(poller, "extract_swaps", extract)


def chain_of(n: int, **overrides) -> dict:
    txs = {f"s{i}": {"swaps": [swap(f"s{i}")], "meta": {"err": None}} for i in range(n)}
    txs.update(overrides)
    return txs


async def test_walks_oldest_first_in_batches_moving_the_cursor_with_each_batch() -> None:
    chain, commits = FakeChain(chain_of(5)), Recorder()
    result = await poll_wallet(chain, WALLET, None, commits, PollPolicy(batch_size=2))
    assert chain.fetched == ["s0", "s1", "s2", "s3", "s4"]
    assert [
        (c.started_from, c.moved_to.signature, [s.signature for s in c.swaps]) for c in commits.commits
    ] == [
        (None, "s1", ["s0", "s1"]),
        ("s1", "s3", ["s2", "s3"]),
        ("s3", "s4", ["s4"]),
    ]
    assert (result.swaps, result.commits, result.signatures) == (5, 3, 5)


class LaggingChain(FakeChain):
    """A node that answers ``null`` for some signatures the first ``lag`` times they are asked for."""

    def __init__(self, txs: dict, lagging: set[str], lag: int):
        super().__init__(txs)
        self.left = dict.fromkeys(lagging, lag)

    async def transactions(self, signatures):
        answers = await super().transactions(signatures)
        out = []
        for signature, answer in zip(signatures, answers, strict=True):
            if self.left.get(signature, 0) > 0:
                self.left[signature] -= 1
                answer = None
            out.append(answer)
        return out


async def test_a_transaction_not_yet_available_is_asked_for_again_and_the_walk_goes_on() -> None:
    chain, commits = LaggingChain(chain_of(5), lagging={"s1", "s3"}, lag=2), Recorder()
    policy = PollPolicy(batch_size=10, null_retries=2, null_retry_s=0.0)
    result = await poll_wallet(chain, WALLET, None, commits, policy)
    assert [s.signature for s in commits.commits[0].swaps] == ["s0", "s1", "s2", "s3", "s4"]
    assert result.unavailable == 0
    # Only the null ones are asked for again: twice each.
    assert chain.fetched == ["s0", "s1", "s2", "s3", "s4", "s1", "s3", "s1", "s3"]


async def test_a_transaction_still_null_after_the_retries_stops_the_walk_before_it() -> None:
    chain, commits = LaggingChain(chain_of(5), lagging={"s2"}, lag=3), Recorder()
    policy = PollPolicy(batch_size=10, null_retries=2, null_retry_s=0.0)
    result = await poll_wallet(chain, WALLET, None, commits, policy)
    assert [c.moved_to.signature for c in commits.commits] == ["s1"]
    assert result.unavailable == 1
    assert chain.fetched.count("s2") == 3


async def test_an_unavailable_transaction_stops_the_cursor_before_it() -> None:
    chain, commits = FakeChain(chain_of(5, s2=None)), Recorder()
    result = await poll_wallet(chain, WALLET, None, commits, PollPolicy(batch_size=10, null_retry_s=0.0))
    assert [c.moved_to.signature for c in commits.commits] == ["s1"]
    assert result.unavailable == 1
    # Next poll starts from s1 and re-reads s2 once it exists.
    chain.txs["s2"] = {"swaps": [swap("s2")], "meta": {"err": None}}
    again = Recorder()
    await poll_wallet(chain, WALLET, "s1", again, PollPolicy(batch_size=10))
    assert [s.signature for s in again.commits[0].swaps] == ["s2", "s3", "s4"]


async def test_nothing_is_committed_when_the_oldest_new_transaction_is_missing() -> None:
    chain, commits = FakeChain(chain_of(3, s0=None)), Recorder()
    result = await poll_wallet(chain, WALLET, None, commits, PollPolicy(null_retry_s=0.0))
    assert commits.commits == [] and result.unavailable == 1


async def test_failed_transactions_are_counted_without_being_fetched() -> None:
    chain, commits = FakeChain(chain_of(3), failed={"s1"}), Recorder()
    result = await poll_wallet(chain, WALLET, None, commits)
    assert chain.fetched == ["s0", "s2"]
    assert result.failed_txs == 1 and commits.commits[0].signatures_seen == 3


async def test_non_trades_and_malformed_answers_advance_the_cursor_and_are_counted() -> None:
    chain = FakeChain(chain_of(3, s0={"swaps": [], "meta": {"err": None}}, s1={"malformed": True}))
    commits = Recorder()
    result = await poll_wallet(chain, WALLET, None, commits)
    assert commits.commits[-1].moved_to.signature == "s2"
    assert (result.non_trade_txs, result.malformed_txs, result.swaps) == (2, 1, 1)
    assert "accountKeys missing" in result.errors[0]


async def test_first_sight_backfill_is_bounded() -> None:
    chain, commits = FakeChain(chain_of(10)), Recorder()
    await poll_wallet(
        chain, WALLET, None, commits, PollPolicy(backfill_max_signatures=3, backfill_seconds=3600), now=5000
    )
    assert chain.listed == [(None, 5000 - 3600, 3)]
    assert chain.fetched == ["s7", "s8", "s9"]
    await poll_wallet(chain, WALLET, "s9", Recorder())
    assert chain.listed[-1] == ("s9", None, None)  # later polls are bounded by the cursor only


async def test_losing_the_cursor_race_stops_the_walk() -> None:
    chain, commits = FakeChain(chain_of(6)), Recorder(refuse_after=1)
    result = await poll_wallet(chain, WALLET, None, commits, PollPolicy(batch_size=2))
    assert result.lost_race and len(commits.commits) == 1
    assert chain.fetched == ["s0", "s1", "s2", "s3"]


async def test_a_graceful_stop_lets_the_batch_in_hand_commit() -> None:
    chain, commits = FakeChain(chain_of(6)), Recorder()
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 1

    result = await poll_wallet(
        chain, WALLET, None, commits, PollPolicy(batch_size=2), should_stop=should_stop
    )
    assert [c.moved_to.signature for c in commits.commits] == ["s1"]
    assert result.stopped_early


async def test_an_idle_wallet_still_records_its_poll() -> None:
    chain, commits = FakeChain(chain_of(2)), Recorder()
    await poll_wallet(chain, WALLET, "s1", commits)
    assert [(c.started_from, c.moved_to) for c in commits.commits] == [("s1", None)]


class DatedChain(FakeChain):
    """A FakeChain whose backfill honours ``not_before``, like the RPC client (by block time)."""

    async def signatures(self, wallet, until, not_before, max_count):
        self.listed.append((until, not_before, max_count))
        order = list(self.txs)  # s{i} at block time 1000 + i
        newer = order[order.index(until) + 1 :] if until else order
        refs = [SignatureRef(s, i, 1000 + order.index(s), False) for i, s in enumerate(newer)]
        refs = [r for r in refs if not_before is None or r.block_time >= not_before]
        return list(reversed(refs))[:max_count]


async def test_first_sight_with_history_only_before_the_window_says_how_old_the_newest_is() -> None:
    chain, commits = DatedChain(chain_of(10)), Recorder()  # block times 1000..1009
    result = await poll_wallet(
        chain, WALLET, None, commits, PollPolicy(backfill_seconds=3600), now=1009 + 7200
    )
    assert (result.signatures, result.swaps, chain.fetched) == (0, 0, [])
    assert (result.outside_backfill, result.outside_backfill_newest) == (True, 1009)
    # One more call, for the newest signature at any age, and none at all when the window has some.
    assert chain.listed == [(None, 1009 + 7200 - 3600, 5000), (None, None, 1)]
    # The poll is recorded without a cursor: a wider window next time reads the history back.
    assert [(c.started_from, c.moved_to) for c in commits.commits] == [(None, None)]
    inside = await poll_wallet(DatedChain(chain_of(10)), WALLET, None, Recorder(), now=2000)
    assert not inside.outside_backfill and inside.swaps == 10


async def test_first_sight_of_an_empty_wallet_is_not_outside_the_window() -> None:
    chain = DatedChain({})
    result = await poll_wallet(chain, WALLET, None, Recorder(), now=10**6)
    assert result.first_sight and not result.outside_backfill


async def test_a_known_wallet_with_nothing_new_costs_no_extra_call() -> None:
    chain = DatedChain(chain_of(3))
    result = await poll_wallet(chain, WALLET, "s2", Recorder(), now=10**6)
    assert not result.first_sight and not result.outside_backfill and len(chain.listed) == 1
