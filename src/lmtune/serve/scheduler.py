"""The engine's scheduler thread: each iteration classifies up to a batch of rows, admits and prefills waiting
sequences, and decodes one step of the running batch.

Nothing one request does may stop it: a failing prefill or decode is retried row by row (the decode's cache rolled
back first) so that only the row that fails alone fails; an error anywhere else in an iteration fails that
iteration's requests and the loop goes on; if the thread ends anyway, `failure` says why and nobody is left waiting.
A mixin of `Engine`: it uses the engine's queues, lock, model and hooks.
"""

from __future__ import annotations

from collections import deque

import torch

from lmtune.serve.classify import classify_rows
from lmtune.serve.inputs import build_inputs
from lmtune.serve.mixed import BatchPlan
from lmtune.serve.requests import Sequence_
from lmtune.serve.running import RunningBatch
from lmtune.serve.sampling import TokenLogprob, next_token, process_logits, token_logprobs


class Scheduler:
    def _loop(self) -> None:
        """The scheduler. An error in one iteration fails that iteration's requests and the loop goes on; if the
        loop itself ends for any other reason, `failure` says why, every waiting request gets its final event and
        later ones are refused (EngineDead): nobody waits for a thread that is gone."""
        try:
            while True:
                with self._wake:
                    while not self._stop and not self._queue and not self._jobs and self._running is None:
                        self._wake.wait()
                    if self._stop:
                        return
                try:
                    with torch.inference_mode():
                        self._classify_pending()
                        self._generation_step()
                except Exception as err:  # noqa: BLE001 - a bug in one step must not end the loop
                    self._fail_everything(f"{type(err).__name__}: {err}")
        except BaseException as err:
            self.failure = f"scheduler thread died: {type(err).__name__}: {err}"
            self._fail_everything(self.failure)
            raise

    def _fail_everything(self, message: str) -> None:
        with self._wake:
            waiting, jobs, self._queue, self._jobs = list(self._queue), list(self._jobs), deque(), deque()
            running, self._running = (self._running.rows if self._running else []), None
        for sequence in [s for group in waiting for s in group] + running:
            if not sequence.finished:
                sequence.fail(message)
        for job in jobs:
            job.on_done(RuntimeError(message))

    def _classify_pending(self) -> None:
        """At most max_batch_size rows per pass, taken from the oldest jobs: a big job goes a batch at a time,
        with generation steps in between."""
        parts, budget = [], self.cfg.max_batch_size
        with self._wake:
            for job in self._jobs:
                if budget <= 0:
                    break
                rows = job.take(budget)
                parts.append((job, rows))
                budget -= len(rows)
        if not parts:
            return
        classify_rows(self, parts)
        with self._wake:
            self._jobs = deque(job for job in self._jobs if job.remaining > 0)

    def _generation_step(self) -> None:
        """Admit waiting requests (all n rows of one, or none of it) while the batch has room, prefill each once,
        merge them into the running batch, then decode one step."""
        admitted: list[list[Sequence_]] = []
        with self._wake:
            free = self.cfg.max_batch_size - (len(self._running) if self._running else 0)
            while self._queue and len(self._queue[0]) <= free:
                free -= len(self._queue[0])
                admitted.append(self._queue.popleft())
            self._admitting = {rows[0].id for rows in admitted}  # a cancel now must still reach them
            self.observer.on_queue(self.queue_depth())
        for group in prefill_groups(admitted, self.cfg.max_scored_prompt_tokens):
            for batch in self._prefill_isolated(group):
                self._running = batch if self._running is None else self._running.merge(batch)
        with self._wake:  # cancels of rows that did not survive their prefill have nothing left to stop
            self._cancelled &= {row.id for row in self._running.rows} if self._running is not None else set()
            self._admitting = set()
        if self._running is not None:
            self._running = self._decode_isolated(self._running)

    def _prefill_isolated(self, group: list[list[Sequence_]]) -> list[RunningBatch]:
        """Prefill `group` (requests, each its rows); if that fails, each request again on its own, so only the
        request that causes the error fails. Nothing is announced before a forward pass succeeds, so a retried row
        never repeats a token."""
        try:
            batch = self._prefill(group)
            return [batch] if batch is not None else []
        except Exception as err:  # noqa: BLE001 - a failing step fails its rows, never the server
            if len(group) == 1:
                for sequence in group[0]:
                    sequence.fail(f"{type(err).__name__}: {err}")
                return []
            return [batch for request in group for batch in self._prefill_isolated([request])]

    def _decode_isolated(self, batch: RunningBatch) -> RunningBatch | None:
        """One decode step; if it fails, the cache is rolled back and each row steps alone: the rows that fail
        alone fail, the others go on with the token they would have had."""
        saved = batch.snapshot()
        try:
            return self._decode(batch)
        except Exception as err:  # noqa: BLE001
            batch.restore(saved)
            if len(batch) == 1:
                batch.rows[0].fail(f"{type(err).__name__}: {err}")
                return None
            survivors = None
            for row in range(len(batch)):
                kept = self._decode_isolated(batch.keep([row]))
                if kept is not None:
                    survivors = kept if survivors is None else survivors.merge(kept)
            return survivors

    def _prefill(self, requests: list[list[Sequence_]]) -> RunningBatch | None:
        """One forward pass over each request's prompt (its first row); its other rows continue from that row's
        cache. Requests that echo the prompt with logprobs keep the logits of their text positions (texts end at
        the last position: decoders pad on the left), and nobody else's."""
        leaders = [request[0] for request in requests]
        inputs = build_inputs(self.model.get_input_embeddings(), [s.prompt_ids for s in leaders],
                              [s.adapter for s in leaders], left_pad=True, pad_id=self.tokenizer.pad_token_id)
        plan = BatchPlan([s.adapter for s in leaders])
        scored = [s for s in leaders if s.params.echo and s.params.logprobs is not None]
        keep = max(len(s.prompt_ids) for s in leaders) if scored else 1
        with self.hooks.active(plan):
            output = self.model(**inputs.model_kwargs(), use_cache=True, logits_to_keep=keep)
        if scored:
            self._score_prompts(requests, output.logits)
        rows = [s for request in requests for s in request]
        index = [i for i, request in enumerate(requests) for _ in request]
        batch = RunningBatch(leaders, plan, output.past_key_values, inputs.attention_mask, inputs.next_position,
                             torch.zeros(len(leaders), dtype=torch.long, device=inputs.attention_mask.device))
        if len(rows) > len(leaders):
            batch = batch.repeat(rows, index)
        last = output.logits[:, -1]
        return batch.keep(self._sample(batch, last if len(rows) == len(leaders) else last[index], len(leaders)))

    def _score_prompts(self, requests: list[list[Sequence_]], logits: torch.Tensor) -> None:
        """Each echoing request's prompt tokens' log-probabilities: token j's from the logits at position j - 1
        (the first token has none, as OpenAI and vLLM answer)."""
        for row, request in enumerate(requests):
            leader = request[0]
            if not (leader.params.echo and leader.params.logprobs is not None):
                continue
            ids = leader.prompt_ids
            text_logits = logits[row, logits.size(1) - len(ids) : logits.size(1) - 1]
            scores = [TokenLogprob(ids[0], None, [])]
            if len(ids) > 1:
                scores += token_logprobs(text_logits, ids[1:], leader.params.logprobs)
            for sequence in request:
                sequence.prompt_logprobs = scores

    def _decode(self, batch: RunningBatch) -> RunningBatch | None:
        with self.hooks.active(batch.plan):
            output = self.model(**batch.step_inputs(), logits_to_keep=1)
        batch.next_position = batch.next_position + 1
        return batch.keep(self._sample(batch, output.logits[:, -1], prefill_rows=0))

    def _sample(self, batch: RunningBatch, logits: torch.Tensor, prefill_rows: int) -> list[int]:
        """Choose, record and announce each row's next token; return the rows that go on."""
        keep = []
        with self._wake:
            cancelled = self._cancelled & {s.id for s in batch.rows}
            self._cancelled -= cancelled
        for row, sequence in enumerate(batch.rows):
            if sequence.id in cancelled:
                sequence.finish("cancelled")
                continue
            if sequence.params.max_tokens == 0:  # echo only: the prompt is scored, nothing generated
                sequence.finish("length")
                continue
            try:  # one row's failure (NaN logits from a broken adapter) is that row's alone
                params = sequence.params
                processed = process_logits(logits[row], params, sequence.prompt_ids, sequence.generated, self.end_ids)
                if sequence.grammar is not None:  # JSON output: only what the grammar allows next
                    processed = sequence.grammar.apply(processed)
                token = next_token(processed, params, sequence.generator)
                if sequence.grammar is not None:
                    sequence.grammar.accept(token)
                scored = params.logprobs is not None or params.n > 1
                logprob = token_logprobs(logits[row][None], [token], params.logprobs or 0)[0] if scored else None
            except Exception as err:  # noqa: BLE001
                sequence.fail(f"{type(err).__name__}: {err}")
                continue
            batch.pending[row] = token
            sequence.accept(token, self.tokenizer, self.end_ids, logprob)
            if not sequence.finished:
                keep.append(row)
        self.observer.on_step(len(batch), len(batch), prefill_rows)
        return keep


def prefill_groups(requests: list[list[Sequence_]], scored_tokens: int, slack: float = 1.25) -> list[list[list[Sequence_]]]:
    """Prefill groups of requests of similar length (prompt + virtual tokens): a batch pads every row to its longest,
    and a 20-token soft prompt beside plain rows would make all of them 20 tokens longer. Requests whose prompt is
    scored (echo with logprobs) are grouped apart, at most `scored_tokens` prompt positions a group (their logits
    over the whole vocabulary are kept): the others keep the last position only. Groups merge after prefill."""
    def length(request: list[Sequence_]) -> int:
        s = request[0]
        return len(s.prompt_ids) + (s.adapter.body.virtual_tokens() if s.adapter and s.adapter.body else 0)

    def scores(request: list[Sequence_]) -> bool:
        return request[0].params.echo and request[0].params.logprobs is not None

    groups: list[list[list[Sequence_]]] = []
    for scored in (False, True):
        start = len(groups)
        for request in sorted((r for r in requests if scores(r) == scored), key=length):
            last = groups[-1] if len(groups) > start else None
            fits = last is not None and length(request) <= slack * length(last[0])
            if fits and scored:
                fits = len(request[0].prompt_ids) * (len(last) + 1) <= scored_tokens
            if fits:
                last.append(request)
            else:
                groups.append([request])
    return groups
