"""CKKS on ``tenseal.sealapi``: parameters, owner / processor key sets, and the backend.

Roles (Ran and Li 2025's setting):

* the **owner** (hospital) holds the secret key: it encrypts images, decrypts
  logits. Its key set is derived from its medveil :class:`~medveil.keys.Key`
  (HKDF -> the seed of SEAL's Blake2xb generator, used for key generation only;
  encryption randomness comes from SEAL's system generator), so the medveil key
  file is the one secret to guard and a wrong key is caught by its fingerprint.
* the **processor** gets a public context: parameters, public key, relinearisation
  keys and rotation keys for exactly the steps the packed network uses; no
  secret key (``PublicContext.can_decrypt`` is false and there is no decryptor).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medveil.errors import ConfigError, KeyMismatchError, MissingDependencyError

# HomomorphicEncryption.org security standard (Albrecht et al. 2018), classical
# attacks, uniform ternary secret, 128-bit security: the largest log2(q) per N.
HE_STANDARD_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


def sealapi():
    try:
        import tenseal.sealapi as seal
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "the ckks scheme needs TenSEAL: pip install 'tenseal==0.3.18'") from exc
    return seal


@dataclass(frozen=True)
class CKKSParameters:
    """N, the modulus chain and the scale (defaults: the measured best on this hardware).

    The first prime (33 bits) holds the final logits: with scale 2^27 they must stay
    below 2^5 in magnitude (``fold_network`` rescales the output layer to keep them
    under 8). The last prime (50 bits) is the special key-switching prime: a larger
    one keeps the rotation noise small (a 31-bit one costs 2-4 % logit error).
    """

    poly_modulus_degree: int = 8192
    coeff_bits: tuple[int, ...] = (33, 27, 27, 27, 27, 27, 50)
    scale_bits: int = 27

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def depth(self) -> int:
        return len(self.coeff_bits) - 2

    @classmethod
    def for_depth(cls, depth: int) -> CKKSParameters:
        """The smallest parameters with ``depth`` levels within the 128-bit bound.

        Up to 5 levels: the defaults (N = 8192, scale 2^27). Deeper chains: N = 16384
        with scale 2^30, a 37-bit first prime (7 bits of headroom over the scale for
        the logits, one more than the default's) and a 60-bit special prime
        (rotation noise falls with its size).
        """
        if depth <= cls().depth:
            return cls()
        params = cls(16384, (37, *([30] * depth), 60), 30)
        params.check()
        return params

    def security(self) -> dict[str, Any]:
        """The parameters and the standard's bound they are checked against."""
        total = sum(self.coeff_bits)
        bound = HE_STANDARD_128.get(self.poly_modulus_degree)
        return {"scheme": "CKKS", "library": "Microsoft SEAL via tenseal.sealapi 0.3.18",
                "poly_modulus_degree": self.poly_modulus_degree,
                "coeff_modulus_bits": list(self.coeff_bits), "total_modulus_bits": total,
                "scale_bits": self.scale_bits, "multiplicative_depth": self.depth,
                "max_modulus_bits_128": bound, "security_bits": 128,
                "standard": "HomomorphicEncryption.org (2018), classical, ternary secret",
                "meets_128_bit": bound is not None and total <= bound}

    def check(self) -> None:
        sec = self.security()
        if not sec["meets_128_bit"]:
            raise ConfigError(
                f"CKKS parameters N={self.poly_modulus_degree} with {sec['total_modulus_bits']} "
                f"modulus bits exceed the 128-bit bound ({sec['max_modulus_bits_128']}); "
                "use fewer or smaller primes or a larger N")

    def to_dict(self) -> dict[str, Any]:
        return {"poly_modulus_degree": self.poly_modulus_degree,
                "coeff_bits": list(self.coeff_bits), "scale_bits": self.scale_bits}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CKKSParameters:
        return cls(int(d["poly_modulus_degree"]), tuple(int(b) for b in d["coeff_bits"]),
                   int(d["scale_bits"]))


def _seal_context(params: CKKSParameters, seed: list[int] | None = None):
    seal = sealapi()
    params.check()
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(params.poly_modulus_degree,
                                                     list(params.coeff_bits)))
    if seed is not None:
        parms.set_random_generator(seal.Blake2xbPRNGFactory(seed))
    ctx = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise ConfigError(f"SEAL rejected the CKKS parameters: {ctx.parameters_error_message()}")
    return ctx


def _save(obj) -> bytes:
    fd, path = tempfile.mkstemp(prefix="medveil-seal-")
    os.close(fd)
    try:
        obj.save(path)
        return Path(path).read_bytes()
    finally:
        os.unlink(path)


def _load(obj, ctx, data: bytes):
    fd, path = tempfile.mkstemp(prefix="medveil-seal-")
    try:
        os.write(fd, data)
        os.close(fd)
        obj.load(ctx, path)
        return obj
    except Exception as exc:
        from medveil.errors import IntegrityError

        raise IntegrityError(f"could not read a SEAL object ({type(obj).__name__}): the bytes "
                             "are corrupt or from other parameters; re-export them") from exc
    finally:
        os.unlink(path)


@dataclass
class PublicContext:
    """What the processor holds: no secret key, so it cannot decrypt."""

    params: CKKSParameters
    ctx: Any
    public_key: Any
    relin_keys: Any
    galois_keys: Any
    rotation_steps: list[int]
    key_fingerprint: str
    can_decrypt: bool = field(default=False, init=False)

    @property
    def scale(self) -> float:
        return float(2 ** self.params.scale_bits)

    def encryptor(self):
        return sealapi().Encryptor(self.ctx, self.public_key)

    def to_bytes(self) -> dict[str, bytes]:
        import json

        meta = {"format": "medveil.ckks-public/1", "params": self.params.to_dict(),
                "rotation_steps": self.rotation_steps, "key_fingerprint": self.key_fingerprint}
        return {"meta.json": json.dumps(meta).encode(), "public.bin": _save(self.public_key),
                "relin.bin": _save(self.relin_keys), "galois.bin": _save(self.galois_keys)}

    @classmethod
    def from_bytes(cls, files: dict[str, bytes]) -> PublicContext:
        import json

        seal = sealapi()
        meta = json.loads(files["meta.json"])
        params = CKKSParameters.from_dict(meta["params"])
        ctx = _seal_context(params)
        return cls(params, ctx, _load(seal.PublicKey(), ctx, files["public.bin"]),
                   _load(seal.RelinKeys(), ctx, files["relin.bin"]),
                   _load(seal.GaloisKeys(), ctx, files["galois.bin"]),
                   [int(s) for s in meta["rotation_steps"]], meta["key_fingerprint"])


class OwnerKeys:
    """The owner's CKKS key set, derived from a medveil key; never serialised here."""

    def __init__(self, key, params: CKKSParameters, rotation_steps: list[int]) -> None:
        seal = sealapi()
        seed_bytes = key.derive("ckks/seal-keygen", 64)
        seed = [int.from_bytes(seed_bytes[i:i + 8], "little") for i in range(0, 64, 8)]
        keygen_ctx = _seal_context(params, seed)
        keygen = seal.KeyGenerator(keygen_ctx)
        self.params = params
        self.key_fingerprint = key.fingerprint
        self.ctx = _seal_context(params)  # system randomness for encryption
        self._secret = keygen.secret_key()
        public, relin, galois = seal.PublicKey(), seal.RelinKeys(), seal.GaloisKeys()
        keygen.create_public_key(public)
        keygen.create_relin_keys(relin)
        steps = sorted({int(s) for s in rotation_steps})
        if steps:  # this binding's list overload takes Galois elements: 3^step mod 2N
            modulus = 2 * params.poly_modulus_degree
            keygen.create_galois_keys([pow(3, s % params.slots, modulus) for s in steps], galois)
        self.public = PublicContext(params, self.ctx, public, relin, galois, steps,
                                    key.fingerprint)
        self.encoder = seal.CKKSEncoder(self.ctx)
        self._encryptor = seal.Encryptor(self.ctx, public, self._secret)
        self._decryptor = seal.Decryptor(self.ctx, self._secret)

    def __reduce__(self):  # pragma: no cover - guard
        raise TypeError("OwnerKeys holds a secret key and cannot be pickled")

    def encrypt(self, vec: np.ndarray):
        """Symmetric (secret-key) encryption of a slot vector at the top level."""
        seal = sealapi()
        plain = seal.Plaintext()
        self.encoder.encode(np.asarray(vec, dtype=np.float64).tolist(), self.public.scale, plain)
        ct = seal.Ciphertext()
        self._encryptor.encrypt_symmetric(plain, ct)
        return ct

    def encrypt_bytes(self, vec: np.ndarray) -> bytes:
        """A serialised *seeded* ciphertext of ``vec``: half the size of a full one (the
        second polynomial is replaced by its PRNG seed), which is what the client sends."""
        seal = sealapi()
        plain = seal.Plaintext()
        self.encoder.encode(np.asarray(vec, dtype=np.float64).tolist(), self.public.scale, plain)
        return _save(self._encryptor.encrypt_symmetric(plain))

    def decrypt(self, ct) -> np.ndarray:
        seal = sealapi()
        plain = seal.Plaintext()
        self._decryptor.decrypt(ct, plain)
        return np.asarray(self.encoder.decode_double(plain))


def check_fingerprint(expected: str, key) -> None:
    if key.fingerprint != expected:
        raise KeyMismatchError(f"these ciphertexts were made for key {expected}, not "
                               f"{key.fingerprint}; pass the owner's key file")


def serialize_ciphertexts(cts: list[Any]) -> bytes:
    """Length-prefixed SEAL ciphertexts (SEAL's own compressed format each)."""
    parts = []
    for ct in cts:
        blob = _save(ct)
        parts.append(len(blob).to_bytes(8, "little") + blob)
    return len(cts).to_bytes(4, "little") + b"".join(parts)


def deserialize_ciphertexts(ctx, data: bytes) -> list[Any]:
    seal = sealapi()
    from medveil.errors import IntegrityError

    if len(data) < 4:
        raise IntegrityError("ciphertext blob is truncated; re-export it")
    count, offset, out = int.from_bytes(data[:4], "little"), 4, []
    for _ in range(count):
        size = int.from_bytes(data[offset:offset + 8], "little")
        offset += 8
        if offset + size > len(data):
            raise IntegrityError("ciphertext blob is truncated; re-export it")
        out.append(_load(seal.Ciphertext(), ctx, data[offset:offset + size]))
        offset += size
    return out


class SealBackend:
    """The packed evaluation's operations on SEAL ciphertexts.

    Scales are managed exactly: a weight plaintext is encoded at
    ``scale * q_last / ct.scale`` so that after the rescale every layer is back at
    ``2^scale_bits``; biases are encoded at the ciphertext's own scale and level.
    Encoded weights are cached by name: the first image compiles them (the
    ``compile`` time reported by the benchmark), later images reuse them.

    In ``encrypted_model`` mode the weights are encrypted under the owner's public
    key (the model owner does this; the processor never sees them in the clear)
    and multiplications are ciphertext x ciphertext, relinearised once per sum.
    """

    def __init__(self, public: PublicContext, *, encrypted_model: bool = False,
                 weights: dict[Any, Any] | None = None) -> None:
        seal = sealapi()
        self.seal = seal
        self.public = public
        self.ctx = public.ctx
        self.evaluator = seal.Evaluator(self.ctx)
        self.encoder = seal.CKKSEncoder(self.ctx)
        self.encrypted_model = encrypted_model
        self._encryptor = public.encryptor() if encrypted_model else None
        self._cache: dict[Any, Any] = dict(weights or {})
        #: Weights given encrypted by the owner: the processor never encodes one itself.
        self._preloaded = weights is not None
        self.rotations = 0
        self._slots = public.params.slots

    def _last_prime(self, ct) -> float:
        data = self.ctx.get_context_data(ct.parms_id())
        return float(data.parms().coeff_modulus()[-1].value())

    def _encode(self, vec, parms_id, scale):
        if self._preloaded:
            from medveil.errors import IntegrityError

            raise IntegrityError("the release's encrypted model lacks a weight the network "
                                 "needs; it does not match its structure")
        plain = self.seal.Plaintext()
        self.encoder.encode(np.asarray(vec, dtype=np.float64).tolist(), parms_id, scale, plain)
        if not self.encrypted_model:
            return plain
        ct = self.seal.Ciphertext()
        self._encryptor.encrypt(plain, ct)
        return ct

    def weight(self, name, vec, ct):
        if name not in self._cache:
            scale = self.public.scale * self._last_prime(ct) / ct.scale
            self._cache[name] = self._encode(vec, ct.parms_id(), scale)
        return self._cache[name]

    def mul_weight(self, ct, name, vec):
        w = self.weight(name, vec, ct)
        out = self.seal.Ciphertext()
        if self.encrypted_model:
            self.evaluator.multiply(ct, w, out)
        else:
            self.evaluator.multiply_plain(ct, w, out)
        return out

    def add(self, a, b):
        out = self.seal.Ciphertext()
        self.evaluator.add(a, b, out)
        return out

    def finish_products(self, ct):
        if ct.size() > 2:
            self.evaluator.relinearize_inplace(ct, self.public.relin_keys)
        self.evaluator.rescale_to_next_inplace(ct)
        return ct

    def add_bias(self, ct, name, vec):
        if name not in self._cache:
            self._cache[name] = self._encode(vec, ct.parms_id(), ct.scale)
        out = self.seal.Ciphertext()
        if self.encrypted_model:
            self.evaluator.add(ct, self._cache[name], out)
        else:
            self.evaluator.add_plain(ct, self._cache[name], out)
        return out

    def rotate(self, ct, step):
        self.rotations += 1
        out = self.seal.Ciphertext()
        self.evaluator.rotate_vector(ct, int(step) % self._slots, self.public.galois_keys, out)
        return out

    def square(self, ct):
        out = self.seal.Ciphertext()
        self.evaluator.square(ct, out)
        self.evaluator.relinearize_inplace(out, self.public.relin_keys)
        self.evaluator.rescale_to_next_inplace(out)
        return out
