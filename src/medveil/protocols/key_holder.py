"""``key_holder``: key holders recover the images and run the task on them (primis).

The release holds every split's codes (with train and val labels or masks, as a view release
does), but codes are not images to train on: the processor has nothing to train.
A key holder, given the key and the owner state by the owner, recovers the
images (``medveil recover``) and trains and predicts with the standard model on
them, as on any plaintext data set.
"""

from __future__ import annotations

import time
from typing import Any

from medveil.protocols.base import BenchRun, Protocol, register_protocol
from medveil.protocols.view import ViewProtocol, release_header, train_standard


@register_protocol
class KeyHolderProtocol(Protocol):
    name = "key_holder"
    summary = ("key holders recover the images (`medveil recover --key K --state S`) and "
               "train the standard model on what they recover (`medveil train --data "
               "RECOVERED.npz`)")

    def release(self, scheme, data, *, key):
        return ViewProtocol.release(self, scheme, data, key=key)

    def utility(self, scheme, data, *, key, budget, seed: int) -> dict[str, float]:
        from medveil.protocols.base import decoded_predictions, in_memory_release
        from medveil.protocols.view import predict_standard

        recovered = self.recover(scheme, in_memory_release(self, scheme, data, key=key),
                                 key=key)
        model = train_standard(recovered, budget=budget, seed=seed)
        predictions = predict_standard(model, recovered.split("test").images)
        return decoded_predictions(predictions).metrics(data.split("test"))

    def bench_row(self, run: BenchRun) -> dict[str, Any]:
        from medveil.bench import finish_view_row
        from medveil.metrics import texture_agreement
        from medveil.store import ProtectedStore

        started = time.perf_counter()
        with run.clock.stage("protect"):
            arrays, extras, info = self.release(run.scheme, run.data, key=run.key)
        protect_ms = 1000 * (time.perf_counter() - started) / len(run.data)
        release = ProtectedStore.in_memory(
            arrays=arrays, extras=extras,
            header=release_header(run.scheme, run.data, self, info), key=run.key)
        with run.clock.stage("recover"):
            recovered = self.recover(run.scheme, release, key=run.key)
        with run.clock.stage("task_training"):
            model = train_standard(recovered, budget=run.budget, seed=run.seed)
        row = finish_view_row(run, model, recovered, {s: a["view"] for s, a in arrays.items()},
                              protect_ms)
        # does the key holder's recovery keep the texture a radiologist reads?
        row["texture"] = texture_agreement(
            run.data.split("test").images,
            run.scheme.recover(arrays["test"]["view"], key=run.key))
        return row
