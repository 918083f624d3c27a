"""CKKS: folding, packing, encrypted inference, roles and files (real chest X-ray crops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medveil.data import load_dataset
from medveil.errors import ConfigError, IntegrityError, ModelFileError
from medveil.he.ckks import (
    CKKSParameters,
    OwnerKeys,
    PublicContext,
    SealBackend,
    _save,
    deserialize_ciphertexts,
    serialize_ciphertexts,
)
from medveil.he.model import HEModel
from medveil.he.nets import arch_spec, build_he_net, fold_network
from medveil.he.packing import NumpyBackend, evaluate_packed, plan_network, simulate
from medveil.keys import Key
from tests.conftest import key_secret


@pytest.fixture(scope="module")
def cxr28():
    return load_dataset("cxr-demo", size=28)


def _briefly_trained(spec, images: np.ndarray, labels: np.ndarray):
    """A few real optimisation steps so BN statistics and polynomials are not at their init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_he_net(spec, 1, 2)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        for _ in range(5):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def _trained_and_folded(architecture: str, data):
    """A briefly trained network of ``architecture`` on ``data``'s size, and its folding."""
    train = data.split("train").head(128)
    spec = arch_spec(architecture, train.image_shape[-1])
    net = _briefly_trained(spec, train.images, train.labels)
    return net, fold_network(net, spec, calibration=train.images[:, 0])


@pytest.fixture(scope="module")
def tutorial(cxr28):
    return _trained_and_folded("tutorial", cxr28)


@pytest.fixture(scope="module")
def deep(cxr):
    return _trained_and_folded("deep", cxr)


@pytest.fixture(scope="module")
def cxr32():
    return load_dataset("cxr-demo", size=32)


@pytest.fixture(scope="module")
def wide(cxr32):
    """The 7-level network (a middle dense layer) at its smallest size: same layers as 64 px."""
    return _trained_and_folded("wide", cxr32)


@pytest.fixture(scope="module")
def wide_pool(cxr32):
    """``wide`` with its pooling after the activation: a convolution layer of its own."""
    return _trained_and_folded("wide_pool", cxr32)


@pytest.fixture(scope="module")
def owner_key():
    return Key.generate()


@pytest.mark.parametrize("which", ["tutorial", "deep", "wide", "wide_pool"])
def test_folding_is_exact(which, tutorial, deep, wide, wide_pool, cxr, cxr28, cxr32):
    net, folded = {"tutorial": tutorial, "deep": deep, "wide": wide, "wide_pool": wide_pool}[which]
    images = {"tutorial": cxr28, "deep": cxr}.get(which, cxr32).split("test").images[:6]
    with torch.no_grad():
        reference = net(torch.from_numpy(images)).double().numpy()
    assert np.abs(folded.forward(images) - reference).max() < 1e-4


@pytest.mark.parametrize("which,cps", [("tutorial", 1), ("tutorial", 2), ("tutorial", 4),
                                       ("deep", 2), ("deep", 4)])
def test_packing_computes_the_network(which, cps, tutorial, deep, cxr, cxr28):
    _, folded = tutorial if which == "tutorial" else deep
    images = (cxr28 if which == "tutorial" else cxr).split("test").images[:3]
    plan = plan_network(folded, channels_per_segment=cps)
    assert np.abs(simulate(plan, images) - folded.forward(images)).max() < 1e-9


@pytest.mark.parametrize("slots", [4096, 8192])
def test_packing_computes_a_network_with_middle_layers(slots, wide, cxr32):
    _, folded = wide
    assert len(folded.middle) == 1 and folded.depth == 7
    images = cxr32.split("test").images[:3]
    plan = plan_network(folded, slots=slots)
    assert [m.block for m in plan.middle] == [slots // 64]
    assert np.abs(simulate(plan, images) - folded.forward(images)).max() < 1e-9


def test_a_convolution_layer_is_evaluated_in_place(wide, wide_pool, cxr32):
    """The block size is costed per layer: the convolution of ``wide_pool`` gets block 1
    (every input rotated straight onto its output's slot), the dense layer after it
    the largest block; same logits, fewer rotations and products than ``wide``."""
    images = cxr32.split("test").images[:3]
    counts = {}
    for name, (_, folded) in {"wide": wide, "wide_pool": wide_pool}.items():
        plan = plan_network(folded, slots=8192)
        assert np.abs(simulate(plan, images) - folded.forward(images)).max() < 1e-9
        backend = NumpyBackend()
        evaluate_packed(plan, plan.pack_image(images[0, 0]), backend)
        counts[name] = backend.rotations, len(plan.hidden)
        if name == "wide_pool":
            assert plan.block == 1 and [m.block for m in plan.middle] == [8192 // 64]
    assert counts["wide_pool"][0] < counts["wide"][0]
    assert counts["wide_pool"][1] < counts["wide"][1]
    with pytest.raises(ConfigError, match="does not fit one ciphertext of 4096 slots"):
        plan_network(wide_pool[1], slots=4096)


@pytest.mark.parametrize("which", ["wide", "wide_pool"])
def test_the_processor_skips_exactly_the_products_the_owner_skipped(which, wide, wide_pool,
                                                                    cxr32):
    """An encrypted model carries no vector values: the skeleton must know which of a
    sparse layer's products the owner's evaluation left out (all-zero vectors)."""
    from medveil.he.shipping import plan_structure, skeleton_plan

    _, folded = {"wide": wide, "wide_pool": wide_pool}[which]
    plan = plan_network(folded, slots=8192)

    class Names(NumpyBackend):
        def __init__(self):
            super().__init__()
            self.names = []

        def mul_weight(self, ct, name, vec):
            self.names.append(name)
            return ct if vec is None else ct * vec

        def add_bias(self, ct, name, vec):
            self.names.append(name)
            return ct if vec is None else ct + vec

    owner = Names()
    evaluate_packed(plan, plan.pack_image(cxr32.split("test").images[0, 0]), owner)
    total = plan.segments * plan.baby * plan.giant + sum(m.baby * m.giant for m in plan.middle)
    made = [n for n in owner.names if n[0] in ("hidden", "middle")]
    assert len(made) < total  # the convolution's empty diagonals were skipped
    processor = Names()
    skeleton = skeleton_plan(plan_structure(plan), owner.names)
    evaluate_packed(skeleton, [np.zeros(plan.slots)] * plan.groups, processor)
    assert processor.names == owner.names


def test_parameters_are_planned_from_the_depth():
    assert CKKSParameters.for_depth(5) == CKKSParameters()
    deep = CKKSParameters.for_depth(7)
    assert deep.poly_modulus_degree == 16384 and deep.depth == 7
    assert deep.security()["meets_128_bit"]
    with pytest.raises(ConfigError, match="128-bit"):
        CKKSParameters.for_depth(14)


def test_only_the_planned_rotations_are_used(tutorial, cxr28):
    _, folded = tutorial
    plan = plan_network(folded)
    used = []

    class Recorder(NumpyBackend):
        def rotate(self, ct, step):
            used.append(step % plan.slots)
            return super().rotate(ct, step)

    evaluate_packed(plan, plan.pack_image(cxr28.split("test").images[0]), Recorder())
    assert set(used) <= set(plan.rotation_steps)
    assert len(used) == 19  # 4 (conv) + 8 (fc 64) + 7 (fc 2): see docs/schemes.md


def test_bad_packing_choices_are_clear_errors(tutorial):
    _, folded = tutorial
    with pytest.raises(ConfigError, match="channels_per_segment"):
        plan_network(folded, channels_per_segment=3)


@pytest.mark.parametrize("encrypted_model", [False, True])
def test_encrypted_inference_matches_plaintext(encrypted_model, tutorial, cxr28, owner_key):
    _, folded = tutorial
    plan = plan_network(folded)
    owner = OwnerKeys(owner_key, CKKSParameters(), plan.rotation_steps)
    backend = SealBackend(owner.public, encrypted_model=encrypted_model)
    images = cxr28.split("test").images[:4, 0]
    reference = folded.forward(images)
    for image, ref in zip(images, reference, strict=True):
        out = evaluate_packed(plan, [owner.encrypt(v) for v in plan.pack_image(image)], backend)
        logits = owner.decrypt(out)[:2] / plan.output_scale
        assert np.abs(logits - ref).max() < 5e-3
        assert logits.argmax() == ref.argmax()


def test_parameters_meet_128_bit_security_and_bad_ones_are_refused():
    sec = CKKSParameters().security()
    assert sec["meets_128_bit"] and sec["total_modulus_bits"] == 218 <= sec["max_modulus_bits_128"]
    with pytest.raises(ConfigError, match="128-bit"):
        CKKSParameters(8192, (60, 40, 40, 40, 60)).check()
    with pytest.raises(ConfigError, match="128-bit"):
        CKKSParameters(4096, (33, 27, 27, 27, 27, 27, 50)).check()


def test_the_processor_context_holds_no_secret_and_cannot_decrypt(tutorial, cxr28, owner_key):
    _, folded = tutorial
    plan = plan_network(folded)
    owner = OwnerKeys(owner_key, CKKSParameters(), plan.rotation_steps)
    files = owner.public.to_bytes()
    secret = _save(owner._secret)  # noqa: SLF001 - the test proves it never leaves
    for blob in files.values():
        assert secret[64:4096] not in blob
        assert key_secret(owner_key) not in blob
    public = PublicContext.from_bytes(files)
    assert public.can_decrypt is False and not hasattr(public, "_secret")
    # The processor evaluates with the public context alone ...
    image = cxr28.split("test").images[0, 0]
    cts = deserialize_ciphertexts(public.ctx, serialize_ciphertexts(
        [owner.encrypt(v) for v in plan.pack_image(image)]))
    out = evaluate_packed(plan, cts, SealBackend(public))
    # ... only the owner can read the result; a secret key of the processor's own cannot.
    logits = owner.decrypt(out)[:2] / plan.output_scale
    assert np.abs(logits - folded.forward(image[None])[0]).max() < 5e-3
    intruder = OwnerKeys(Key.generate(), CKKSParameters(), [])
    garbage = intruder.decrypt(out) / plan.output_scale
    # Wrong-key decryption is uniform noise mod q: judged over all slots, not two.
    assert np.median(np.abs(garbage)) > 100 * np.abs(logits).max()


def test_tampered_or_truncated_ciphertexts_are_detected(owner_key):
    owner = OwnerKeys(owner_key, CKKSParameters(), [])
    blob = serialize_ciphertexts([owner.encrypt(np.zeros(4096))])
    with pytest.raises(IntegrityError):
        deserialize_ciphertexts(owner.ctx, blob[:-1000])


def test_he_model_file_round_trip_and_bad_file(tutorial, tmp_path, cxr28):
    _, folded = tutorial
    model = HEModel(folded)
    model.save(tmp_path / "m.he")
    again = HEModel.load(tmp_path / "m.he")
    images = cxr28.split("test").images[:2]
    assert np.array_equal(again.net.forward(images), folded.forward(images))
    (tmp_path / "bad.he").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="medveil protect --scheme ckks"):
        HEModel.load(tmp_path / "bad.he")
    with pytest.raises(Exception, match="1x28x28"):
        again.check_images(np.zeros((1, 1, 64, 64)))


def test_he_model_files_keep_middle_layers_and_old_files_still_load(wide, tutorial, tmp_path,
                                                                    cxr32, cxr28):
    import io
    import json

    _, folded = wide
    HEModel(folded).save(tmp_path / "wide.he")
    again = HEModel.load(tmp_path / "wide.he")
    images = cxr32.split("test").images[:2]
    assert len(again.net.middle) == 1 and again.he_params.poly_modulus_degree == 16384
    assert np.array_equal(again.net.forward(images), folded.forward(images))
    # a file of the first format (no middle layers, planned for 4096 slots) still loads
    arrays = dict(np.load(io.BytesIO(HEModel(tutorial[1]).to_bytes())))
    meta = json.loads(arrays["meta"].tobytes())
    meta = {k: v for k, v in meta.items() if k not in ("middle_layers", "slots")}
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "format": "medveil.he-model/1"}).encode(),
                                   dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    old = HEModel.from_bytes(buffer.getvalue())
    assert old.plan.slots == 4096 and not old.net.middle
    assert np.array_equal(old.net.forward(cxr28.split("test").images[:2]),
                          tutorial[1].forward(cxr28.split("test").images[:2]))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["wide", "wide_pool"])
def test_a_network_with_middle_layers_runs_encrypted(which, wide, wide_pool, cxr32, owner_key):
    """7 levels at N = 16384, the model plain and encrypted (a minute on two cores);
    ``wide_pool``'s convolution in place (block 1)."""
    from medveil.he.shipping import context_extras, encrypt_weights, load_public, processor_backend

    _, folded = {"wide": wide, "wide_pool": wide_pool}[which]
    model = HEModel(folded)
    owner = OwnerKeys(owner_key, model.he_params, model.plan.rotation_steps)
    image = cxr32.split("test").images[0, 0]
    reference = folded.forward(image[None])[0]
    extras = {**context_extras(owner.public), **encrypt_weights(owner, model.plan)}
    plan, encrypted, _ = processor_backend(extras, load_public(extras))
    for p, backend in [(model.plan, SealBackend(owner.public)), (plan, encrypted)]:
        out = evaluate_packed(p, [owner.encrypt(v) for v in model.plan.pack_image(image)],
                              backend)
        logits = owner.decrypt(out)[:2] / model.plan.output_scale
        assert np.abs(logits - reference).max() < 5e-3


@pytest.mark.parametrize("engine", ["seal", "rns"])
def test_batch_mode_matches_plaintext(engine, tutorial, cxr28, owner_key):
    from medveil.he.batch import batch_evaluator, decrypt_batch, encrypt_batch

    _, folded = tutorial
    owner = OwnerKeys(owner_key, CKKSParameters(), [])
    images = cxr28.split("test").images[:16, 0]
    cts = encrypt_batch(owner, images)
    evaluator = batch_evaluator(owner.public, folded, engine=engine)
    logits = decrypt_batch(owner, evaluator.run(cts, consume=True), len(images),
                           folded.output_scale)
    # Overlapping 7x7 patches of stride 3: a streamed batch would encrypt pixels again.
    assert engine == "seal" or not evaluator.reads_each_pixel_once
    reference = folded.forward(images)
    assert np.abs(logits - reference).max() < 5e-3
    assert (logits.argmax(1) == reference.argmax(1)).all()
    assert engine == "seal" or all(ct is None for ct in cts)  # consumed as read


def test_the_residue_engine_runs_a_seven_level_network_in_batch(owner_key):
    """A small network with a middle layer (the 7-level path: layer 1 streamed into the
    middle layer as unrelinearised squares) on real chest X-rays at 16 px."""
    from medveil.he import rns
    from medveil.he.batch import (
        RNSBatchEvaluator,
        SharedPixels,
        StreamedPixels,
        decrypt_batch,
        encrypt_batch,
        measure_batch,
    )
    from medveil.he.nets import ArchSpec

    data = load_dataset("cxr-demo", size=16)
    spec = ArchSpec("small7", 16, 4, 4, 4, ("conv:4:3:1:1", "pool:2+dense:8"))
    train = data.split("train").head(128)
    folded = fold_network(_briefly_trained(spec, train.images, train.labels), spec,
                          calibration=train.images[:, 0])
    assert folded.depth == 7
    owner = OwnerKeys(owner_key, CKKSParameters.for_depth(7), [])
    images = data.split("test").images[:40, 0]
    evaluator = RNSBatchEvaluator(owner.public, folded)
    cts = encrypt_batch(owner, images)
    outputs = evaluator.run(cts)
    logits = decrypt_batch(owner, outputs, len(images), folded.output_scale)
    reference = folded.forward(images)
    assert np.abs(logits - reference).max() < 1e-3
    assert (logits.argmax(1) == reference.argmax(1)).all()
    # Shared among two forked processes: the same sums, so the same residues bit for bit.
    shared = evaluator.run(cts, workers=2)
    assert all((rns.ciphertext_view(a) == rns.ciphertext_view(b)).all()
               for a, b in zip(outputs, shared, strict=True))
    # The client's pixels encrypted by two processes into shared memory: every
    # ciphertext's uniform part is its own (no worker repeats another's randomness).
    pixels = encrypt_batch(owner, images, workers=2)
    assert isinstance(pixels, SharedPixels) and len(pixels) == 16 * 16
    uniform = pixels.residues[:, 1, 0, :8]
    assert len({row.tobytes() for row in uniform}) == len(uniform)
    logits = decrypt_batch(owner, evaluator.run(pixels, consume=True, workers=2), len(images),
                           folded.output_scale)
    assert np.abs(logits - reference).max() < 1e-3
    assert len(pixels) == 0  # released after the first layer
    # Streamed (encrypted as the first layer reads them, for batches too large to hold):
    # the same result to CKKS noise, on two processes too.
    streamed = encrypt_batch(owner, images, streamed=True)
    assert isinstance(streamed, StreamedPixels) and len(streamed) == 16 * 16
    logits = decrypt_batch(owner, evaluator.run(streamed, workers=2), len(images),
                           folded.output_scale)
    assert np.abs(logits - reference).max() < 1e-3
    # A patch network's first layer reads each pixel once: one encryption per pixel,
    # as up front (counted in this process, one worker), and streamed by default.
    assert evaluator.reads_each_pixel_once
    once = encrypt_batch(owner, images, streamed=True)
    evaluator.run(once)
    assert once.encryptions == len(once)
    measured = measure_batch(owner, folded, images, 40, workers=2)
    assert measured["batch_streamed"] and measured["batch_argmax_agreement"] == 1.0
    with pytest.raises(ConfigError, match="residue engine"):
        measure_batch(owner, folded, images, 40, streamed=True, engine="seal")
    with pytest.raises(ConfigError, match="at least 1"):
        evaluator.run(cts, workers=0)


def test_residue_products_are_exact_and_views_alias_the_ciphertext(owner_key):
    from medveil.he import rns

    rng = np.random.default_rng(0)
    owner = OwnerKeys(owner_key, CKKSParameters(), [])
    for q in rns.level_primes(owner.ctx, owner.ctx.first_parms_id()):
        weight = rng.integers(-(2 ** 36), 2 ** 36, size=(5, 300)).astype(np.float64)
        x = rng.integers(0, q, size=(400, 7)).astype(np.float64)
        columns = np.sort(rng.choice(400, 300, replace=False))
        product = rns.IntegerWeights.cut(weight, q.bit_length(), chunk=64).matmul_mod(
            x, q, rns.support_runs(columns))
        exact = (weight.astype(np.int64).astype(object) @ x[columns].astype(np.int64)
                 .astype(object)) % q
        assert (product.astype(np.int64) == exact.astype(np.int64)).all()
    values = rng.uniform(-1, 1, owner.params.slots)
    ct = owner.encrypt(values)
    view = rns.ciphertext_view(ct)
    assert view.shape == (2, ct.coeff_modulus_size(), owner.params.poly_modulus_degree)
    primes = rns.level_primes(owner.ctx, ct.parms_id())
    for i, q in enumerate(primes):  # times three, in place
        view[:, i, :] = (view[:, i, :] * np.uint64(3)) % np.uint64(q)
    np.testing.assert_allclose(owner.decrypt(ct)[:8], 3 * values[:8], atol=1e-3)
    assert rns.readable(owner.public)


def test_a_sparse_layer_splits_into_groups_of_shared_inputs():
    from medveil.he import rns

    weight = np.zeros((6, 10))
    weight[0:3, [1, 2, 5]] = 1.0
    weight[3:6, [0, 9]] = 2.0
    groups = rns.row_groups(weight)
    assert [(r.tolist(), c.tolist()) for r, c in groups] == [([0, 1, 2], [1, 2, 5]),
                                                             ([3, 4, 5], [0, 9])]
    assert rns.support_runs(np.array([1, 2, 5, 6, 7, 9])) == [slice(1, 3), slice(5, 8),
                                                              slice(9, 10)]
    with pytest.raises(ConfigError, match="batch engine"):
        from medveil.he.batch import batch_evaluator

        batch_evaluator(None, None, engine="gpu")


def test_tutorial_baseline_runs_and_is_only_compared(tutorial, cxr28):
    from medveil.he.baseline import TutorialPipeline

    _, folded = tutorial
    image = cxr28.split("test").images[0, 0]
    logits = TutorialPipeline(folded).logits(image)
    assert logits.shape == (2,) and np.isfinite(logits).all()


def test_ckks_release_runs_with_public_context_and_encrypted_weights(cxr28, owner_key,
                                                                   tutorial):
    """The processor evaluates with the release alone; a flipped byte is caught."""
    from medveil.he.ckks import CKKSParameters, OwnerKeys, _load, sealapi
    from medveil.he.packing import evaluate_packed
    from medveil.he.shipping import (
        context_extras,
        encrypt_weights,
        load_public,
        pack_slots,
        processor_backend,
        unpack_slots,
    )

    _, folded = tutorial
    model = HEModel(folded)
    owner = OwnerKeys(owner_key, CKKSParameters(), model.plan.rotation_steps)
    extras = {**context_extras(owner.public), **encrypt_weights(owner, model.plan)}
    public = load_public(extras)
    plan, backend, info = processor_backend(extras, public)
    assert info["encrypted_model"] and plan.first[0][0] is None  # no weight values
    images = cxr28.split("test").images[:2]
    views = pack_slots([[owner.encrypt_bytes(v) for v in model.plan.pack_image(i[0])]
                        for i in images])
    seal = sealapi()
    logits = []
    for blobs in unpack_slots(views, per_row=plan.groups):
        out = evaluate_packed(plan, [_load(seal.Ciphertext(), public.ctx, b) for b in blobs],
                              backend)
        logits.append(owner.decrypt(out)[:plan.num_classes] / model.plan.output_scale)
    assert np.abs(np.stack(logits) - folded.forward(images[:, 0])).max() < 5e-3
    views[0, 9] ^= 1  # a flipped ciphertext byte: SEAL refuses it or the slot check does
    with pytest.raises(IntegrityError):
        for blobs in unpack_slots(views[:1], per_row=plan.groups):
            [_load(seal.Ciphertext(), public.ctx, b) for b in blobs]
    tail = views.copy()
    tail[1, -1] = 7  # bytes after a ciphertext in its slot
    with pytest.raises(IntegrityError, match="after a ciphertext"):
        unpack_slots(tail, per_row=plan.groups)


def test_ckks_parameters_are_auto_or_named_in_full():
    from medveil.schemes import create

    assert create("ckks").params["poly_modulus_degree"] == "auto"
    named = create("ckks", poly_modulus_degree=8192, coeff_bits=[33, 27, 27, 27, 27, 27, 50],
                   scale_bits=27)
    assert named.he_params == CKKSParameters()
    with pytest.raises(ConfigError, match="together"):
        create("ckks", poly_modulus_degree=16384)
    with pytest.raises(ConfigError, match="power of two"):
        create("ckks", poly_modulus_degree="big")
    with pytest.raises(ConfigError, match="128-bit"):
        create("ckks", poly_modulus_degree=8192, coeff_bits=[60, 60, 60, 60], scale_bits=40)


def test_the_default_network_follows_the_image_size():
    from medveil.he.model import default_architecture

    assert default_architecture(28) == "tutorial"
    assert default_architecture(64) == default_architecture(128) == "wide_pool"
    assert default_architecture(60) == "deep"  # not a multiple of 16: the 5-level network


def test_distillation_trains_a_teacher_and_changes_what_the_he_network_learns(cxr28):
    """Same data, seed and epochs: the distilled network learns the teacher's softened
    outputs too, so its weights differ from the labels-only network's; both are recorded."""
    from medveil.he.model import train_he_model

    train = cxr28.split("train").head(96)
    distilled, _ = train_he_model(train, architecture="tutorial", epochs=2, seed=0, distill=True)
    labels_only, _ = train_he_model(train, architecture="tutorial", epochs=2, seed=0,
                                    distill=False)
    assert distilled.info["distilled"] and not labels_only.info["distilled"]
    assert not np.allclose(distilled.net.hidden_weight, labels_only.net.hidden_weight)
    again, _ = train_he_model(train, architecture="tutorial", epochs=2, seed=0, distill=True)
    np.testing.assert_allclose(again.net.hidden_weight, distilled.net.hidden_weight)


def test_the_teachers_budget_is_named_or_follows_the_image_size(cxr28):
    """A longer teacher teaches something else (the student's weights change), the budget
    is recorded with the model; auto keeps the standard budget up to 64 px, longer above."""
    from medveil.he.model import default_teacher_epochs, train_he_model
    from medveil.schemes import create
    from medveil.tasks import ClassifierConfig

    assert default_teacher_epochs(28) == default_teacher_epochs(64) == ClassifierConfig().epochs
    assert default_teacher_epochs(128) > ClassifierConfig().epochs
    train = cxr28.split("train").head(96)
    short, _ = train_he_model(train, architecture="tutorial", epochs=1, seed=0, teacher_epochs=1)
    longer, _ = train_he_model(train, architecture="tutorial", epochs=1, seed=0, teacher_epochs=2)
    assert (short.info["teacher_epochs"], longer.info["teacher_epochs"]) == (1, 2)
    assert not np.allclose(short.net.hidden_weight, longer.net.hidden_weight)
    with pytest.raises(ConfigError, match="teacher_epochs"):
        train_he_model(train, architecture="tutorial", epochs=1, seed=0, teacher_epochs=0)
    for bad in (0, "long"):
        with pytest.raises(ConfigError, match="teacher_epochs"):
            create("ckks", teacher_epochs=bad)
    assert create("ckks", teacher_epochs="25").params["teacher_epochs"] == 25


def test_the_ckks_fit_reads_the_validation_split_for_model_selection(cxr28):
    """The HE network keeps its best validation epoch, as the standard classifier does, so
    the owner's fit reads train and val; schemes without model selection read train only."""
    from medveil.data.imageset import from_splits
    from medveil.schemes import create

    train = cxr28.split("train")
    data = from_splits([("train", train.images[:96], train.labels[:96], None),
                        ("val", train.images[96:160], train.labels[96:160], None),
                        ("test", train.images[160:170], train.labels[160:170], None)])
    assert create("ckks").fit_data(data).split_names == ["train", "val"]
    assert create("plain").fit_data(data).split_names == ["train"]
    assert create("ckks").fit_data(data.split("train")).split_names == ["train"]
    scheme = create("ckks", architecture="tutorial", epochs=3, distill=False)
    scheme.fit(scheme.fit_data(data), key=Key.generate(), seed=0)
    info = scheme.model.info
    assert info["selected_on"] == "val_auc" and 1 <= info["selected_epoch"] <= 3
    assert 0.0 <= info["val_auc"] <= 1.0
    alone = create("ckks", architecture="tutorial", epochs=3, distill=False)
    alone.fit(data.split("train"), key=Key.generate(), seed=0)
    assert alone.model.info["selected_on"] == "last_epoch"
