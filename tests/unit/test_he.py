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


@pytest.fixture(scope="module")
def tutorial(cxr28):
    train = cxr28.split("train").head(128)
    spec = arch_spec("tutorial", 28)
    net = _briefly_trained(spec, train.images, train.labels)
    return net, fold_network(net, spec, calibration=train.images[:, 0])


@pytest.fixture(scope="module")
def deep(cxr):
    train = cxr.split("train").head(128)
    spec = arch_spec("deep", 64)
    net = _briefly_trained(spec, train.images, train.labels)
    return net, fold_network(net, spec, calibration=train.images[:, 0])


@pytest.fixture(scope="module")
def owner_key():
    return Key.generate()


@pytest.mark.parametrize("which", ["tutorial", "deep"])
def test_folding_is_exact(which, tutorial, deep, cxr, cxr28):
    net, folded = tutorial if which == "tutorial" else deep
    images = (cxr28 if which == "tutorial" else cxr).split("test").images[:6]
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


def test_batch_mode_matches_plaintext(tutorial, cxr28, owner_key):
    from medveil.he.batch import BatchEvaluator, decrypt_batch, encrypt_batch

    _, folded = tutorial
    owner = OwnerKeys(owner_key, CKKSParameters(), [])
    images = cxr28.split("test").images[:16, 0]
    logits = decrypt_batch(owner, BatchEvaluator(owner.public, folded).run(
        encrypt_batch(owner, images)), len(images), folded.output_scale)
    reference = folded.forward(images)
    assert np.abs(logits - reference).max() < 5e-3
    assert (logits.argmax(1) == reference.argmax(1)).all()


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
