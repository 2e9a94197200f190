import random
import time

import pytest

from pipeline.router.config import DEFAULT_SCORER_WEIGHTS
from pipeline.router.engine_stats import EngineStats
from pipeline.router.errors import NoHealthyReplica
from pipeline.router.replicas import Pool, Replica
from pipeline.router.scoring import (
    SCORERS,
    PickContext,
    PrefixAffinity,
    ReplicaPicker,
    UnknownPlugin,
    prefix_key,
)
from pipeline.router.scoring.load import InFlightScorer, KVCacheScorer, QueueScorer, relative
from pipeline.router.scoring.params import AffinityParams, GaugeParams, InFlightParams


class DictStats:
    def __init__(self, stats: dict[str, EngineStats]) -> None:
        self.stats = stats

    def get(self, base_url: str, now: float | None = None) -> EngineStats | None:
        return self.stats.get(base_url)


def pool(n: int = 3) -> Pool:
    return Pool("default", 4096, [Replica(f"http://r{i}/v1", "default") for i in range(n)])


def ctx(key: int | None = None, exclude: frozenset[str] = frozenset()) -> PickContext:
    return PickContext(needed_tokens=100, max_context_tokens=4096, exclude=exclude,
                       prefix_key=key, now=1000.0)


def messages(rule: str, alert: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a SOC analyst. " * 40},
            {"role": "user", "content": f"Runbook for {rule}: " + "check the logs. " * 80
             + f"<alert>{alert}</alert>"}]


def test_relative_formula() -> None:
    assert relative([0, 1], 1.0) == [1.0, 0.5]
    assert relative([0, 0], 1.0) == [1.0, 1.0]
    assert relative([], 1.0) == []


def test_queue_and_kv_scorers_prefer_less_loaded_and_neutral_without_stats() -> None:
    p = pool()
    stats = DictStats({"http://r0/v1": EngineStats(num_requests_waiting=4,
                                                   kv_cache_usage_perc=0.9),
                       "http://r1/v1": EngineStats(num_requests_waiting=0,
                                                   kv_cache_usage_perc=0.1)})
    queue = QueueScorer(stats).score(p.replicas, ctx())
    assert queue[1] > queue[0] and queue[2] == 0.5
    kv = KVCacheScorer(stats).score(p.replicas, ctx())
    assert kv[0] == pytest.approx(0.1) and kv[1] == pytest.approx(0.9) and kv[2] == 0.5


def test_in_flight_scorer_counts_requests_and_tokens() -> None:
    p = pool(2)
    p.replicas[0].in_flight_requests, p.replicas[0].in_flight_tokens = 1, 5000
    p.replicas[1].in_flight_requests, p.replicas[1].in_flight_tokens = 1, 100
    first, second = InFlightScorer().score(p.replicas, ctx())
    assert second > first


def test_picker_filters_excluded_and_open_circuits() -> None:
    p = pool(3)
    p.replicas[1].circuit.opened_at = 1e12  # open, far from its cooldown
    picker = ReplicaPicker({"in-flight": 1.0}, rng=random.Random(1))
    for _ in range(20):
        chosen = picker.pick(p, needed_tokens=10, exclude={"http://r0/v1"})
        assert chosen.url == "http://r2/v1"
    with pytest.raises(NoHealthyReplica):
        picker.pick(p, needed_tokens=10, exclude={"http://r0/v1", "http://r2/v1"})


def test_picker_sums_weighted_clamped_scores() -> None:
    p = pool(2)
    p.replicas[0].in_flight_requests = 3  # busier by the router's own count
    stats = DictStats({"http://r0/v1": EngineStats(num_requests_waiting=0),
                       "http://r1/v1": EngineStats(num_requests_waiting=9)})
    assert ReplicaPicker({"in-flight": 1.0}, stats=stats).pick(
        p, needed_tokens=10).url == "http://r1/v1"
    picker = ReplicaPicker({"in-flight": 1.0, "queue": 5.0}, stats=stats)
    assert picker.pick(p, needed_tokens=10).url == "http://r0/v1"
    assert set(picker.last_scores) == {"http://r0/v1", "http://r1/v1"}
    assert max(picker.last_scores.values()) <= 6.0


def test_ties_are_shared() -> None:
    p = pool(3)
    picker = ReplicaPicker({"in-flight": 1.0}, rng=random.Random(7))
    assert len({picker.pick(p, needed_tokens=1).url for _ in range(60)}) == 3


def test_registry() -> None:
    assert set(DEFAULT_SCORER_WEIGHTS) <= set(SCORERS)
    assert not any(SCORERS[name].deprecated for name in DEFAULT_SCORER_WEIGHTS)
    with pytest.raises(UnknownPlugin):
        ReplicaPicker({"no-such-scorer": 1.0})
    with pytest.raises(ValueError):
        ReplicaPicker({"queue": -1.0})


def test_scorers_take_typed_parameters_with_the_tuned_defaults() -> None:
    p = pool(2)
    stats = DictStats({"http://r0/v1": EngineStats(num_requests_waiting=1),
                       "http://r1/v1": EngineStats(num_requests_waiting=0)})
    assert QueueScorer(stats).score(p.replicas, ctx())[0] == pytest.approx(1 - 1 / 2)
    smoother = QueueScorer(stats, GaugeParams(smoothing=3.0)).score(p.replicas, ctx())
    assert smoother[0] == pytest.approx(1 - 1 / 4)
    p.replicas[0].in_flight_tokens = 256
    requests_only = InFlightScorer(InFlightParams(token_smoothing=1e9))
    assert requests_only.score(p.replicas, ctx())[0] == pytest.approx(1.0)
    # Raw parameters from the configuration are validated by the scorer's own model.
    picker = ReplicaPicker({"queue": 1.0}, stats=stats, params={"queue": {"smoothing": 3.0}})
    picker.pick(p, needed_tokens=10)
    assert picker.last_scores["http://r0/v1"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="'queue'"):
        ReplicaPicker({"queue": 1.0}, params={"queue": {"smothing": 3.0}})  # a typo
    with pytest.raises(ValueError, match="'ttft'"):
        ReplicaPicker({"ttft": 0.0}, params={"ttft": {"smoothing_s": -1}})  # off, still checked
    with pytest.raises(UnknownPlugin):
        ReplicaPicker({"queue": 1.0}, params={"no-such-scorer": {}})


def test_affinity_parameters_set_the_block_size_and_the_memory() -> None:
    msgs = messages("5710", "alert one")
    default, halves = PrefixAffinity(), PrefixAffinity(AffinityParams(block_chars=256))
    assert len(halves.blocks(msgs)) in (2 * len(default.blocks(msgs)),
                                        2 * len(default.blocks(msgs)) - 1)
    assert default.key(msgs, default.blocks(msgs)) == prefix_key(msgs)
    short_memory = PrefixAffinity(AffinityParams(recent_ttl_s=1.0))
    blocks = short_memory.blocks(msgs)
    short_memory.sent_blocks(blocks, "http://r0/v1", now=0.0)
    assert short_memory.cached_fraction(blocks, "http://r0/v1", 0.5) == 1.0
    assert short_memory.cached_fraction(blocks, "http://r0/v1", 2.0) == 0.0


def test_prefix_key_is_block_aligned_and_ignores_the_alert_tail() -> None:
    a = prefix_key(messages("5710", "alert one"))
    b = prefix_key(messages("5710", "a completely different alert " * 30))
    c = prefix_key(messages("31101", "alert one"))
    assert a is not None and a == b and a != c
    assert prefix_key([{"role": "user", "content": "short"}]) is None


def test_affinity_is_consistent_and_bounded_by_load() -> None:
    p = pool(4)
    affinity = PrefixAffinity(AffinityParams(epsilon=0.25))
    key = prefix_key(messages("5710", "x"))
    assert key is not None
    home = affinity.target(key, p.replicas)
    assert home is not None
    assert all(affinity.target(key, p.replicas) is home for _ in range(5))
    # Removing another replica does not move the key (consistent hashing).
    others = [r for r in p.replicas if r is not home]
    assert affinity.target(key, [home, *others[1:]]) is home
    # Overloaded home: the key spills to the next replica on the ring.
    home.in_flight_requests = 4
    spill = affinity.target(key, p.replicas)
    assert spill is not None and spill is not home
    assert spill.url == affinity.ring_order(key, [r.url for r in p.replicas])[1]


def test_affinity_scores_and_recent_memory() -> None:
    p = pool(3)
    affinity = PrefixAffinity()
    key = 12345
    scores = affinity.target_scores(p.replicas, ctx(key))
    assert sorted(scores) == [0.0, 0.0, 0.1]  # unseen: a nudge to the ring's target only
    a, b = (r for r, s in zip(p.replicas, scores, strict=True) if s == 0.0)
    affinity.served(key, a.url, 998.0)
    affinity.served(key, b.url, 999.0)
    scores = affinity.target_scores(p.replicas, ctx(key))
    assert scores[p.replicas.index(b)] == 1.0  # served it last
    assert scores[p.replicas.index(a)] == 0.5
    assert sorted(scores)[0] == 0.0
    b.in_flight_requests = 10  # over the bound: no longer preferred
    assert affinity.target_scores(p.replicas, ctx(key))[p.replicas.index(b)] == 0.0
    assert affinity.target_scores(p.replicas, ctx(None)) == [0.0, 0.0, 0.0]


def test_picker_keeps_a_prefix_on_one_replica_until_it_is_busy() -> None:
    p = pool(3)
    picker = ReplicaPicker({"prefix-affinity": 2.0, "in-flight": 1.0}, rng=random.Random(3))
    msgs = messages("5710", "x")
    first = picker.pick(p, needed_tokens=10, messages=msgs)
    first.in_flight_requests = 1
    assert picker.pick(p, needed_tokens=10, messages=msgs) is first
    first.in_flight_requests = 5
    assert picker.pick(p, needed_tokens=10, messages=msgs) is not first


def test_picker_sends_a_request_past_a_replica_busy_prefilling_a_long_prompt() -> None:
    p = pool(2)
    # Equal request counts; r0 is still prefilling a long prompt, r1 is decoding.
    for r in p.replicas:
        r.in_flight_requests, r.in_flight_tokens = 1, 2000
    p.replicas[0].prefill.dispatched(2000, time.monotonic())
    picker = ReplicaPicker(DEFAULT_SCORER_WEIGHTS, rng=random.Random(0))
    assert {picker.pick(p, needed_tokens=100).url for _ in range(10)} == {"http://r1/v1"}


def test_prefill_wait_runs_down_with_the_clock_and_reanchors_at_first_tokens() -> None:
    from pipeline.router.prefill import PrefillModel

    model = PrefillModel(seconds_per_token=0.001)
    assert model.dispatched(2000, now=10.0)  # nothing queued before: a clean sample
    assert not model.dispatched(100, now=10.5)
    assert model.expected_wait(10.5) == pytest.approx(2.1 - 0.5)
    assert model.expected_wait(11.0) == pytest.approx(1.1)  # the long one is half done
    # The long prompt's first token came early: the short one starts now.
    model.first_token(2000, dispatched_at=10.0, now=11.5, alone=True)
    assert model.queued_tokens == 100
    assert model.expected_wait(11.5) == pytest.approx(100 * model.seconds_per_token)
    # Learned from the clean sample: 1.5 s / 2,000 tokens, moved 10% of the way.
    assert model.seconds_per_token == pytest.approx(0.001 + 0.1 * (0.00075 - 0.001))
    model.abandoned(100, now=11.6)
    assert model.queued_tokens == 0 and model.expected_wait(11.6) == 0.0


def test_prefill_wait_scorer_prefers_a_replica_whose_long_prompt_is_nearly_done() -> None:
    from pipeline.router.scoring.load import PrefillWaitScorer

    p = pool(2)
    p.replicas[0].prefill.dispatched(2000, now=0.0)  # sent 1.9 s ago: nearly done
    p.replicas[1].prefill.dispatched(2000, now=1.8)  # just sent
    assert [r.pending_prefill_tokens for r in p.replicas] == [2000, 2000]
    now = PickContext(needed_tokens=100, max_context_tokens=4096, exclude=frozenset(),
                      prefix_key=None, now=1.9)
    waits = PrefillWaitScorer().score(p.replicas, now)
    assert waits[0] > waits[1]
    # Retired (ttft replaced it), still registered for bench/prefix_affinity.py's comparison.
    assert SCORERS["prefill-wait"].deprecated and "prefill-queue" not in SCORERS


def test_cached_fraction_counts_the_leading_blocks_sent_to_a_replica_recently() -> None:
    from pipeline.router.scoring.prefix import prompt_blocks

    affinity = PrefixAffinity(AffinityParams(recent_ttl_s=60.0))
    first = prompt_blocks(messages("5710", "alert one"))
    other_alert = prompt_blocks(messages("5710", "alert two, another host"))
    other_rule = prompt_blocks(messages("31101", "alert one"))
    assert len(first) > 4 and first[:-1] == other_alert[:-1] and first != other_alert
    affinity.sent_blocks(first, "http://r0/v1", now=100.0)
    assert affinity.cached_fraction(first, "http://r0/v1", 100.0) == 1.0
    # The same system prompt and runbook, another alert: all but the tail block.
    shared = affinity.cached_fraction(other_alert, "http://r0/v1", 100.0)
    assert shared == pytest.approx((len(other_alert) - 1) / len(other_alert))
    assert 0 < affinity.cached_fraction(other_rule, "http://r0/v1", 100.0) < shared
    assert affinity.cached_fraction(first, "http://r1/v1", 100.0) == 0.0  # not sent there
    assert affinity.cached_fraction(first, "http://r0/v1", 161.0) == 0.0  # past the TTL


def test_ttft_scorer_sends_a_prompt_where_its_prefix_is_cached_unless_that_queue_is_long(
        ) -> None:
    from pipeline.router.scoring.load import ExpectedTTFTScorer
    from pipeline.router.scoring.prefix import prompt_blocks

    p = pool(2)
    for replica in p.replicas:
        replica.prefill.seconds_per_token = 0.0005
    affinity = PrefixAffinity()
    blocks = prompt_blocks(messages("5710", "alert one"))
    affinity.sent_blocks(blocks, "http://r0/v1", now=0.0)
    scorer = ExpectedTTFTScorer(affinity)
    context = PickContext(needed_tokens=1600, max_context_tokens=4096, exclude=frozenset(),
                          prefix_key=None, now=1.0, prompt_tokens=1500, blocks=blocks)
    # r0 holds the prompt's prefix: its own prefill is ~0 there, 0.75 s on r1.
    assert scorer.score(p.replicas, context) == [1.0, pytest.approx(0.05 / 0.8)]
    # r0 has 0.5 s of prefill queued: still sooner than 0.75 s of prefill on r1.
    p.replicas[0].prefill.dispatched(1000, now=1.0)
    short_queue = scorer.score(p.replicas, context)
    assert short_queue[0] > short_queue[1]
    # 2 s queued there: r1 starts it sooner.
    p.replicas[0].prefill.dispatched(3000, now=1.0)
    long_queue = scorer.score(p.replicas, context)
    assert long_queue[1] > long_queue[0]


def test_choice_counts_only_the_prompt_tokens_a_replica_is_expected_to_prefill() -> None:
    p = pool(1)
    picker = ReplicaPicker({"ttft": 1.0})
    msgs = messages("5710", "alert one")
    first = picker.choose(p, needed_tokens=600, prompt_tokens=500, messages=msgs)
    assert first.uncached_tokens == 500  # never sent before
    again = picker.choose(p, needed_tokens=600, prompt_tokens=500,
                          messages=messages("5710", "alert two"))
    assert 1 <= again.uncached_tokens <= 500 // 4  # the last block: the alert's own tail


def test_decode_slots_wait_only_once_every_slot_is_held_and_learn_how_long_one_is() -> None:
    from pipeline.router.slots import DecodeSlots

    slots = DecodeSlots(hold_s=0.4)
    assert slots.expected_wait(occupied=3, max_num_seqs=4) == 0.0  # the 4th slot is free
    assert slots.expected_wait(occupied=4, max_num_seqs=4) == pytest.approx(0.1)
    assert slots.expected_wait(occupied=7, max_num_seqs=4) == pytest.approx(0.4)
    slots.finished(first_token_at=10.0, now=11.4)  # held 1.4 s after its first token
    assert slots.hold_s == pytest.approx(0.4 + 0.1 * (1.4 - 0.4))


def test_ttft_scorer_ranks_a_replica_with_full_decode_slots_below_one_with_free_slots(
        ) -> None:
    from pipeline.router.scoring.load import ExpectedTTFTScorer
    from pipeline.router.scoring.params import TTFTParams

    p = pool(2)
    full, free = p.replicas
    # Equal prefill queues (nothing queued: every first token is out) ...
    assert full.prefill.expected_wait(1000.0) == free.prefill.expected_wait(1000.0) == 0.0
    # ... but r0's 4 slots are all held by requests still decoding, r1 has 2 of 4.
    stats = DictStats({full.url: EngineStats(num_requests_running=4),
                       free.url: EngineStats(num_requests_running=2)})
    scorer = ExpectedTTFTScorer(PrefixAffinity(), stats, TTFTParams(max_num_seqs=4))
    scores = scorer.score(p.replicas, ctx())
    assert scores[1] == 1.0 and scores[0] < scores[1]
    # Without the slots model both would tie (what `ttft` saw before).
    roomy = ExpectedTTFTScorer(PrefixAffinity(), stats, TTFTParams(max_num_seqs=256))
    assert roomy.score(p.replicas, ctx()) == [1.0, 1.0]


def test_ttft_scorer_counts_the_routers_own_in_flight_requests_between_scrapes() -> None:
    from pipeline.router.scoring.load import ExpectedTTFTScorer
    from pipeline.router.scoring.params import TTFTParams

    p = pool(2)
    p.replicas[0].in_flight_requests = 6  # dispatched since the last scrape (none here)
    scorer = ExpectedTTFTScorer(PrefixAffinity(), DictStats({}),
                                TTFTParams(max_num_seqs_by_pool={"default": 4}))
    assert scorer.occupied(p.replicas[0], 1000.0) == 6.0
    scores = scorer.score(p.replicas, ctx())
    assert scores[0] < scores[1] == 1.0


def test_ttft_max_num_seqs_per_endpoint_then_pool_then_default_and_validated() -> None:
    from pipeline.router.scoring.params import TTFTParams

    params = TTFTParams(max_num_seqs=256, max_num_seqs_by_pool={"long": 8},
                        max_num_seqs_by_endpoint={"http://a/v1": 2})
    assert params.max_num_seqs_of("http://a/v1", "long") == 2
    assert params.max_num_seqs_of("http://b/v1", "long") == 8
    assert params.max_num_seqs_of("http://b/v1", "default") == 256
    picker = ReplicaPicker({"ttft": 1.0}, params={"ttft": {"max_num_seqs": 4}})
    picker.pick(pool(2), needed_tokens=10)
    with pytest.raises(ValueError, match="'ttft'"):
        ReplicaPicker({"ttft": 1.0}, params={"ttft": {"max_num_seqs_by_pool": {"p": 0}}})


def test_a_finished_attempt_teaches_its_replica_how_long_a_slot_is_held() -> None:
    from pipeline.router.metering import PendingPrefill

    replica = Replica("http://r0/v1", "default")
    before = replica.slots.hold_s
    pending = PendingPrefill(replica, 100, None)
    pending.done()  # first token
    time.sleep(0.01)
    pending.release()  # the stream ended
    assert replica.slots.hold_s < before  # 10 ms held, well under the 0.5 s it assumed
    failed = PendingPrefill(replica, 100, None)
    learned = replica.slots.hold_s
    failed.release()  # no first token: it never decoded, nothing learned
    assert replica.slots.hold_s == learned


def test_ttft_scorer_prices_prompt_tokens_at_the_pools_rate_unless_told_per_replica(
        ) -> None:
    """One replica's learned rate drifted up (it took the cached prompts whose blocks it
    had evicted): by its own rate every short prompt would avoid it; by the pool's
    median the replicas tie and load decides."""
    from pipeline.router.scoring.load import ExpectedTTFTScorer
    from pipeline.router.scoring.params import TTFTParams

    p = pool(3)
    for replica, rate in zip(p.replicas, (0.0009, 0.0005, 0.0005), strict=True):
        replica.prefill.seconds_per_token = rate
    context = PickContext(needed_tokens=200, max_context_tokens=4096, exclude=frozenset(),
                          prefix_key=None, now=1.0, prompt_tokens=150)
    pooled = ExpectedTTFTScorer(PrefixAffinity()).score(p.replicas, context)
    assert pooled == [1.0, 1.0, 1.0]
    own = ExpectedTTFTScorer(PrefixAffinity(), params=TTFTParams(prefill_rate="replica"))
    drifted, *others = own.score(p.replicas, context)
    assert others == [1.0, 1.0] and drifted == pytest.approx(1 - 0.06 / 0.11)
    # Queued work is priced at the pool's rate too: 1,000 tokens at 0.5 ms = 0.5 s.
    p.replicas[0].prefill.dispatched(1000, now=1.0)
    scorer = ExpectedTTFTScorer(PrefixAffinity())
    assert scorer.wait(p.replicas[0], 1.0, 0.0005) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        TTFTParams.model_validate({"prefill_rate": "fastest"})


def test_ttft_scorer_adds_other_routers_requests_from_the_scrape_to_its_own_fresh_count(
        ) -> None:
    """A scrape that says how many requests were the router's own then: the rest are other
    routers' and are added to the router's own count now; a request of its own that ended
    since the scrape no longer counts (before: max(own, scraped) kept it for a scrape)."""
    from pipeline.router.scoring.load import ExpectedTTFTScorer

    p = pool(2)
    mine, shared = p.replicas
    mine.in_flight_requests = shared.in_flight_requests = 1
    stats = DictStats({
        mine.url: EngineStats(num_requests_running=4, own_in_flight=4),  # 3 ended since
        shared.url: EngineStats(num_requests_running=4, num_requests_waiting=1,
                                own_in_flight=2)})  # 3 of other routers
    scorer = ExpectedTTFTScorer(PrefixAffinity(), stats)
    assert scorer.occupied(mine, 1000.0) == 1.0
    assert scorer.occupied(shared, 1000.0) == 1.0 + 3.0
    unknown = DictStats({mine.url: EngineStats(num_requests_running=4)})
    assert ExpectedTTFTScorer(PrefixAffinity(), unknown).occupied(mine, 1000.0) == 4.0


async def test_the_scraper_records_the_routers_own_in_flight_requests_with_each_scrape(
        ) -> None:
    """The picker tells the scraper its replicas' in-flight counts (summed over the
    pools that share a URL), read as each real /metrics answer comes back."""
    import asyncio

    from aiohttp import web

    from pipeline.router.scoring import build_picker

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="vllm:num_requests_running 5\nvllm:num_requests_waiting 2\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/v1"
    picker = build_picker({"ttft": 1.0}, [url])
    try:
        pools = [Pool(name, 4096, [Replica(url, name)]) for name in ("a", "b")]
        for p, count in zip(pools, (2, 1), strict=True):
            picker.pick(p, needed_tokens=10)
            p.replicas[0].in_flight_requests = count
        for _ in range(50):
            stats = picker._stats.get(url)
            if stats is not None and stats.own_in_flight == 3.0:
                break
            await asyncio.sleep(0.05)
        assert stats is not None and stats.requests == 7.0 and stats.others() == 4.0
    finally:
        await picker.close()
        await runner.cleanup()


def test_recent_requests_breaks_near_ties_towards_the_replica_that_got_fewest() -> None:
    """Idle replicas tie on every load scorer; the decayed count of recent picks sends
    the next request to the one that got fewest, so counts do not drift apart."""
    from pipeline.router.scoring.balance import RecentRequests, RecentRequestsScorer
    from pipeline.router.scoring.params import RecentParams

    recent = RecentRequests(half_life_s=10.0)
    recent.picked("a", 0.0)
    recent.picked("a", 0.0)
    assert recent.count("a", 10.0) == pytest.approx(1.0)  # one half-life later
    assert recent.count("b", 10.0) == 0.0

    p = pool(3)
    scorer = RecentRequestsScorer(RecentParams(smoothing=2.0))
    for url, times in (("http://r0/v1", 4), ("http://r1/v1", 2)):
        for _ in range(times):
            scorer.picked(url, 1000.0)
    assert scorer.score(p.replicas, ctx()) == pytest.approx([1 - 4 / 6, 1 - 2 / 6, 1.0])

    picker = ReplicaPicker({"in-flight": 2.0, "recent-requests": 1.0},
                           rng=random.Random(7))
    picks = [picker.pick(p, needed_tokens=10).url for _ in range(30)]
    assert {picks.count(r.url) for r in p.replicas} == {10}
    blind = ReplicaPicker({"in-flight": 2.0}, rng=random.Random(7))
    coin = [blind.pick(p, needed_tokens=10).url for _ in range(30)]
    assert {coin.count(r.url) for r in p.replicas} != {10}  # ties drawn at random
    with pytest.raises(ValueError, match="'recent-requests'"):
        ReplicaPicker({"recent-requests": 1.0}, params={"recent-requests": {"half_life_s": 0}})
