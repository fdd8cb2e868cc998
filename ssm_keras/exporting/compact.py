"""The compact file format (`.ssm`): a trained masked model in a few kilobytes.

A trained signed supermask is mostly zeros: with a signed-constant
initialisation (`elus`, `signed_kaiming_constant`) every effective weight of a
layer is `-c`, `0` or `+c`, so a layer is one float32 scale `c` and a ternary
matrix `t = sign(W0) * m` that is 96-99% zeros. This format stores exactly
that, entropy-coded, and rebuilds the masked and the baked model with
effective kernels equal to the trained ones (`np.array_equal`; a hidden
entry is a zero whose sign bit is not kept).

Each masked kernel (a layer's `kernel`, an LSTM cell's `recurrent_kernel`,
a separable convolution's `depthwise_kernel` and `pointwise_kernel`, ...)
is stored by one codec: `signed_constant` (`c` and `t`),
`seeded` (the initialiser's stateless seed and a SHA-256 of `W0`, redrawn on
load) or `values` (the surviving float32 weights); each mask in the smallest
of three codings: `rice` (Golomb-Rice coded gaps between non-zero entries),
`lzma` (2-bit entries, LZMA2) and `lzma_units_first` (the same, unit by
unit). The file layout, byte by byte, and measured sizes:
docs/compact-format.md.

The rebuilt masked model has the stored mask but not the trained scores: its
kernel is `W0` (`seeded`), `c * sign(t)` (`signed_constant`) or the stored
values, and its scores are stand-ins with `m(s)` equal to the stored mask.
Every other variable, of any layer, is stored raw.

Version 2 stores one record per masked kernel, keyed by the masked layer's
`mask_scope` (`dense_1`, `attention/query`) and the kernel's name; version
1 (one record per masked layer, its `kernel`) is still read.
"""

import collections
import hashlib
import json
import lzma
import math
import os
import struct
import typing
import zlib

import keras
import numpy as np

from ssm_keras import arguments, choices, files
from ssm_keras import layers as ssm_layers
from ssm_keras.errors import ExportError
from ssm_keras.layers import base
from ssm_keras.transforms import baking, cloning

MAGIC = b"\x89SSM\r\n\x1a\n"
VERSION = 2
READABLE_VERSIONS = (1, 2)
FORMAT = "ssm_keras.compact"
_PREFIX = struct.Struct("<8sHIQ")  # magic, version, header size, payload size
_CHECKSUM_SIZE = hashlib.sha256().digest_size
_MAX_RICE_K = 40
_LZMA_FILTERS = [{
    "id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME,
    "dict_size": 1 << 23, "lc": 0, "lp": 0, "pb": 0,
}]

# A preset dictionary for the header's DEFLATE stream (RFC 1951; zlib's
# `zdict`): JSON fragments that recur in the configs of the model zoo. DEFLATE
# copies them by reference, which shrinks a 4%-dense FCN file by about 6%.
# Part of format versions 1 and 2: never edit it (a test pins its SHA-256).
HEADER_DICTIONARY = "".join([
    '{"module":"keras.layers","class_name":"Activation","config":{"name":"',
    '"activation":"relu"},"activation":"softmax"},',
    '{"format":"ssm_keras.compact","model":{"name":"',
    '","trainable":true,"layers":[{"module":"keras.layers","class_name":"InputLayer",',
    '"config":{"batch_shape":[null,',
    '"dtype":"float32","sparse":false,"ragged":false,"name":"images","optional":false},',
    '"registered_name":null,"name":"images","inbound_nodes":[]},',
    '{"module":"ssm_keras.layers","class_name":"PerImageStandardization","config":',
    '{"name":"standardize","activity_regularizer":null,"trainable":true,"dtype":',
    '{"module":"keras","class_name":"DTypePolicy","config":{"name":"float32"},',
    '"registered_name":null},"autocast":true},',
    '"registered_name":"ssm_keras>PerImageStandardization",',
    '{"module":"keras.layers","class_name":"MaxPooling2D","config":{"name":"pool_',
    '"pool_size":[2,2],"padding":"valid","strides":[2,2],"data_format":"channels_last"},',
    '{"module":"keras.layers","class_name":"Flatten","config":{"name":"flatten",',
    '"trainable":true,"dtype":{"module":"keras","class_name":"DTypePolicy",',
    '"config":{"name":"float32"},"registered_name":null},"data_format":"channels_last"},',
    '{"module":"ssm_keras.layers","class_name":"MaskedConv2D","config":{"name":"conv_',
    '"filters":64,"kernel_size":[3,3],"strides":[1,1],"padding":"same"},',
    '"registered_name":"ssm_keras>MaskedConv2D",',
    '{"module":"ssm_keras.layers","class_name":"MaskedDense","config":{"name":"dense_',
    '","trainable":true,"dtype":{"module":"keras","class_name":"DTypePolicy","config":',
    '{"name":"float32"},"registered_name":null},"mask":"signed","tau_fraction":0.4,',
    '"density":0.5,"kernel_initializer":{"module":"ssm_keras.initializers",',
    '"class_name":"SignedConstant","config":{"factor":6.0,"seed":null},',
    '"registered_name":"ssm_keras>SignedConstant"},"score_initializer":',
    '{"module":"keras.initializers","class_name":"GlorotUniform","config":',
    '{"seed":null,"input_axes":null,"output_axes":null},"registered_name":null},',
    '"use_bias":false,"bias_initializer":{"module":"keras.initializers",',
    '"class_name":"Zeros","config":{},"registered_name":null},"activation":"elu",',
    '"regime":"mask","bernoulli_eval":"expected","seed":0,"units":',
    '"registered_name":"ssm_keras>MaskedDense","build_config":{"input_shape":[null,',
    '"name":"dense_',
    '","inbound_nodes":[{"args":[{"class_name":"__keras_tensor__","config":{"shape":[null,',
    '"dtype":"float32","keras_history":["',
    '",0,0]}}],"kwargs":{}}]}',
    '"input_layers":[["images",0,0]],"output_layers":[["softmax",0,0]]},',
    '"preprocessing":{"input_shape":[',
    '"input_dtype":"float32","steps":["per_image_standardization"]},"metadata":{',
    '"variables":[{"layer":"',
    '","name":"threshold","dtype":"float32","shape":[],"offset":',
    '"masked_layers":[{"layer":"',
    '","shape":[',
    '"codec":"signed_constant","scale":0.',
    '"mask":{"count":',
    '"rice_k":',
    '"signs":true,"offset":',
    '"size":',
]).encode("ascii")


class CompactFileError(ExportError):
    """A compact file that is missing, truncated, corrupt or of another version."""


class CompactModel(typing.NamedTuple):
    """What `load_compact` rebuilds."""

    masked_model: keras.Model
    baked_model: keras.Model
    metadata: dict


# Mask coding: three codings of a mask in {-1, 0, 1}; the writer keeps the
# smallest per layer.
def rice_parameter(gaps):
    """The `k` minimising the Rice code size `sum(g >> k) + n * (k + 1)` bits."""
    sizes = [int(np.sum(gaps >> k)) + gaps.size * (k + 1) for k in range(_MAX_RICE_K)]
    return int(np.argmin(sizes))


def _unary(quotients):
    """`q` one-bits then a zero-bit for every `q`."""
    ends = np.cumsum(quotients + 1) - 1
    bits = np.ones(int(ends[-1]) + 1 if ends.size else 0, np.uint8)
    bits[ends] = 0
    return bits


def _fixed_width(values, width):
    """Every value as `width` bits, most significant first."""
    shifts = np.arange(width - 1, -1, -1)
    return ((values[:, None] >> shifts) & 1).astype(np.uint8).ravel()


def _encode_rice(mask, signs):
    flat = mask.ravel()
    positions = np.flatnonzero(flat)
    gaps = np.diff(positions, prepend=-1) - 1
    k = rice_parameter(gaps)
    bits = [_unary(gaps >> k), _fixed_width(gaps & ((1 << k) - 1), k)]
    if signs:
        bits.append((flat[positions] < 0).astype(np.uint8))
    return {"rice_k": k}, np.packbits(np.concatenate(bits)).tobytes()


def _decode_rice(record, data, shape):
    count, k = record["count"], record["rice_k"]
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    ends = np.flatnonzero(bits == 0)[:count]
    unary_size = int(ends[-1]) + 1 if count else 0
    needed = unary_size + count * (k + int(record["signs"]))
    if ends.size != count or needed > bits.size:
        raise CompactFileError(f"mask data holds fewer than {count} entries")
    quotients = np.diff(ends, prepend=-1) - 1
    remainder_bits = bits[unary_size : unary_size + count * k].reshape(count, k)
    remainders = remainder_bits.astype(np.int64) @ (1 << np.arange(k - 1, -1, -1))
    positions = np.cumsum((quotients << k) + remainders + 1) - 1
    size = math.prod(shape)
    if count and positions[-1] >= size:
        raise CompactFileError(f"mask data points outside a kernel of shape {shape}")
    mask = np.zeros(size, np.float32)
    mask[positions] = 1.0
    if record["signs"]:
        negative = bits[unary_size + count * k : needed].astype(bool)
        mask[positions[negative]] = -1.0
    return mask.reshape(shape)


def _encode_lzma(mask, signs):
    """2-bit codes (0 -> 0, +1 -> 1, -1 -> 2), four per byte, first entry in
    the high bits, then raw LZMA2 with `_LZMA_FILTERS`."""
    codes = np.where(mask > 0, 1, np.where(mask < 0, 2, 0)).astype(np.uint8).ravel()
    codes = np.concatenate([codes, np.zeros(-codes.size % 4, np.uint8)]).reshape(-1, 4)
    packed = (codes << np.array([6, 4, 2, 0], np.uint8)).sum(axis=1, dtype=np.uint8)
    return {}, lzma.compress(packed.tobytes(), format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)


def _decode_lzma(record, data, shape):
    try:
        packed = lzma.decompress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    except lzma.LZMAError as error:
        raise CompactFileError(f"mask data is not a valid LZMA2 stream ({error})") from None
    codes = (np.frombuffer(packed, np.uint8)[:, None] >> np.array([6, 4, 2, 0], np.uint8)) & 3
    codes = codes.ravel()
    size = math.prod(shape)
    if codes.size != -(-size // 4) * 4 or np.any(codes == 3):
        raise CompactFileError(f"mask data does not hold a kernel of shape {shape}")
    return np.array([0.0, 1.0, -1.0], np.float32)[codes[:size]].reshape(shape)


def _units_first(mask):
    return np.moveaxis(mask, -1, 0)


def _encode_lzma_units_first(mask, signs):
    return _encode_lzma(np.ascontiguousarray(_units_first(mask)), signs)


def _decode_lzma_units_first(record, data, shape):
    transposed = _decode_lzma(record, data, (shape[-1], *shape[:-1]))
    return np.moveaxis(transposed, 0, -1)


_MASK_CODERS = {
    "rice": (_encode_rice, _decode_rice),
    "lzma": (_encode_lzma, _decode_lzma),
    "lzma_units_first": (_encode_lzma_units_first, _decode_lzma_units_first),
}
MASK_CODINGS = tuple(_MASK_CODERS)


def encode_mask(mask, signs, coding=None):
    """Codes a mask in {-1, 0, 1}.

    Args:
        mask: array of any shape (a kernel's; its last axis are the units).
        signs: whether negative entries are kept (without, the mask is
            coded as `|mask|`).
        coding: one of `MASK_CODINGS`, or None for the smallest of them.

    Returns:
        `(record, data)`: `{coding, count, signs, ...}` and the coded bytes.
    """
    mask = np.asarray(mask) if signs else np.abs(mask)
    record = {"count": int(np.count_nonzero(mask)), "signs": bool(signs)}
    best = None
    for name in MASK_CODINGS if coding is None else (coding,):
        fields, data = _MASK_CODERS[name][0](mask, signs)
        if best is None or len(data) < len(best[1]):
            best = ({"coding": name, **record, **fields}, data)
    return best


def decode_mask(record, data, shape):
    """Inverts `encode_mask`: the float32 mask of `shape`.

    Raises:
        CompactFileError: an unknown coding, or data that does not hold
            `count` entries of a kernel of `shape`.
    """
    if record.get("coding") not in _MASK_CODERS:
        raise CompactFileError(f"unknown mask coding {record.get('coding')!r}")
    mask = _MASK_CODERS[record["coding"]][1](record, data, tuple(shape))
    if np.count_nonzero(mask) != record["count"]:
        raise CompactFileError(
            f"mask data holds {np.count_nonzero(mask)} entries, not {record['count']}"
        )
    return mask


# The header.
def compress_header(header):
    """Compact standard JSON (no NaN or Infinity), raw DEFLATE (level 9)
    with `HEADER_DICTIONARY`."""
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=HEADER_DICTIONARY)
    return compressor.compress(text) + compressor.flush()


def _refuse_constant(constant):
    raise ValueError(f"the header holds {constant}, which standard JSON does not")


def decompress_header(data):
    """Inverts `compress_header`; zlib.error or ValueError when damaged
    (also for NaN or Infinity in the JSON, which no writer puts there)."""
    decompressor = zlib.decompressobj(-15, zdict=HEADER_DICTIONARY)
    text = decompressor.decompress(data) + decompressor.flush()
    if not decompressor.eof:
        raise ValueError("the header's DEFLATE stream ends early")
    return json.loads(text.decode("utf-8"), parse_constant=_refuse_constant)


# Encoding a model.
class _Payload:
    """Collects blobs; `add` returns the `{offset, size}` reference of one."""

    def __init__(self):
        self.chunks = []
        self.size = 0

    def add(self, data):
        reference = {"offset": self.size, "size": len(data)}
        self.chunks.append(data)
        self.size += len(data)
        return reference


def _sha256(array):
    return hashlib.sha256(np.ascontiguousarray(array, "<f4").tobytes()).hexdigest()


def _signed_constant_scale(kernel):
    """`c` when every `|W0|` equals one float32 constant `c > 0`, else None."""
    scale = np.abs(kernel.flat[0])
    return scale if scale > 0 and np.all(np.abs(kernel) == scale) else None


def _redrawing_initializer(layer, name, kernel):
    """The seeded initialiser that redraws `kernel` (`W0` of kernel `name`)
    bit for bit, or None."""
    if layer.mask_seed is None:
        return None
    initializer = layer.seeded_initializer(name)
    redrawn = np.asarray(initializer(kernel.shape, dtype="float32"))
    return initializer if np.array_equal(redrawn, kernel) else None


def _encode_masked_kernel(layer, name, payload):
    """The header record of kernel `name` of a masked layer; its blobs go to
    `payload`."""
    variable = layer.kernel_variable(name)
    if np.dtype(variable.dtype).itemsize > 4:
        raise ExportError(
            f"save_compact stores masked kernels in float32, and layer {layer.name!r} holds its "
            f"{name} in {variable.dtype}, which that would round; build the model in float32 "
            "or save it with model.save")
    kernel = variable.numpy().astype(np.float32)
    mask = baking.inference_mask(layer, name)
    record = {"layer": layer.mask_scope, "kernel": name, "shape": list(kernel.shape)}
    scale = _signed_constant_scale(kernel)
    initializer = None if scale is not None else _redrawing_initializer(layer, name, kernel)
    if scale is not None:
        record.update(codec="signed_constant", scale=float(scale))
        mask_record, data = encode_mask(np.sign(kernel) * mask, signs=True)
    elif initializer is not None:
        record.update(
            codec="seeded",
            initializer=keras.initializers.serialize(initializer),
            sha256=_sha256(kernel),
        )
        mask_record, data = encode_mask(mask, signs=bool(np.any(mask < 0)))
    else:
        record["codec"] = "values"
        mask_record, data = encode_mask(mask, signs=False)
        values = (kernel * mask)[mask != 0]
        record["values"] = payload.add(values.astype("<f4").tobytes())
    record["mask"] = {**mask_record, **payload.add(data)}
    return record


def _stored_variables(model):
    """`(layer, leaf, index, variable)` of every variable but the masked
    kernels' `W0` and scores, of every layer (containers' sublayers
    included); `index` is the variable's position in `layer.weights`, and
    `leaf` the layer's position in `cloning.leaf_layers(model)` where
    another layer (of another nested model) has its name, else None."""
    leaves = cloning.leaf_layers(model)
    names = collections.Counter(layer.name for layer in leaves)
    for leaf, layer in enumerate(leaves):
        coded = {id(variable) for leaf in base.masked_leaves(layer)
                 for name in leaf.masked_kernels
                 for variable in (leaf.kernel_variable(name), leaf.scores_variable(name))}
        for index, variable in enumerate(layer.weights):
            if id(variable) not in coded:
                yield layer, leaf if names[layer.name] > 1 else None, index, variable


def _encode_variable(layer, leaf, index, variable, payload):
    dtype = np.dtype(variable.dtype).newbyteorder("<")
    value = variable.numpy()
    baking.check_finite(layer.name, [value])
    data = value.astype(dtype).tobytes()
    return {
        "layer": layer.name,
        "name": variable.name,
        "index": index,
        **({"leaf": leaf} if leaf is not None else {}),
        "dtype": str(variable.dtype),
        "shape": list(variable.shape),
        **payload.add(data),
    }


def _preprocessing(model):
    """What the model expects and does first: raw pixels, then its first layers."""
    standardizes = any(
        isinstance(layer, ssm_layers.PerImageStandardization)
        for layer in cloning.leaf_layers(model)
    )
    return {
        "input_shape": list(model.input_shape[1:]),
        "input_dtype": model.inputs[0].dtype,
        "steps": ["per_image_standardization"] if standardizes else [],
    }


def _check_named(model):
    """Refuses a layer with weights whose `get_config` leaves out its name,
    and two masked layers of one `mask_scope` (one name in two nested
    models): `load_compact` could not tell which layer the stored weights
    are of."""
    for layer in cloning.leaf_layers(model):
        if layer.weights and "name" not in layer.get_config():
            raise ValueError(
                f"save_compact cannot store layer {layer.name!r} ({type(layer).__name__}): its "
                "get_config() leaves out its name, by which its weights are stored; build the "
                "config on super().get_config(), as Keras layers do")
    scopes = [layer.mask_scope for layer in ssm_layers.masked_layers(model)]
    shared = sorted({scope for scope in scopes if scopes.count(scope) > 1})
    if shared:
        raise ValueError(
            f"save_compact cannot store two masked layers named {shared[0]!r} (in different "
            "nested models): masked kernels are stored by name; give them distinct names")


def _checked_metadata(metadata):
    """`metadata` (None: `{}`) as the header stores it (`files.plain_json`),
    if it is a dict that JSON can write; else one `TypeError` naming it."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError("metadata must be a dict (stored as JSON in the file's header). "
                        f"Received: metadata={metadata!r}")
    plain = files.plain_json(metadata)
    try:
        json.dumps(plain)
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must hold only what JSON can write ({error}). "
                        f"Received: metadata={metadata!r}") from None
    return plain


def save_compact(model, path, metadata=None):
    """Writes a masked functional or Sequential model as a compact `.ssm` file.

    Args:
        model: a model with masked layers (of `supermask` or `models.build_architecture`),
            nested models included.
        path: the file to write. An existing file is replaced in one
            rename once the new one is whole (`files.save_atomically`): a
            full disk or a kill leaves it as it was. A read-only file is
            not replaced; a symbolic link is written where it points.
        metadata: a JSON-serialisable dict stored in the header; NaN and
            infinities are stored as null.

    Returns:
        The file's size in bytes.

    Raises:
        ExportError: a layer's mask cannot be stored (a sampling Bernoulli
            mask), a masked kernel is float64 (stored as float32, it would
            be rounded), or the model holds non-finite scores or weights (it
            diverged).
        files.FileWriteError: the file cannot be written.
        TypeError: `path` is not a path, or `metadata` not a JSON-serialisable
            dict (refused before anything is written).
        ValueError: the model is not a built functional or Sequential model
            (`cloning.check_copyable`), a layer with weights has a
            `get_config` that leaves out its name, or two masked layers
            share a name.
    """
    cloning.check_copyable(model, "save_compact")
    _check_named(model)
    arguments.path("path", path)
    metadata = _checked_metadata(metadata)
    payload = _Payload()
    header = {
        "format": FORMAT,
        "model": model.get_config(),
        **({"model_class": "Sequential"} if isinstance(model, keras.Sequential) else {}),
        "preprocessing": _preprocessing(model),
        "metadata": metadata,
        "masked_kernels": [
            _encode_masked_kernel(layer, name, payload)
            for layer, name in ssm_layers.masked_kernels(model)
        ],
        "variables": [
            _encode_variable(layer, leaf, index, variable, payload)
            for layer, leaf, index, variable in _stored_variables(model)
        ],
    }
    header_bytes = compress_header(header)
    body = b"".join(
        [_PREFIX.pack(MAGIC, VERSION, len(header_bytes), payload.size), header_bytes]
        + payload.chunks
    )
    files.write_atomically(path, body + hashlib.sha256(body).digest())
    return len(body) + _CHECKSUM_SIZE


# Reading a file.
def read_compact(path):
    """Checks a compact file and returns `(header, payload)`.

    Raises:
        CompactFileError: the file is missing, not a compact file, of an
            unknown version, truncated, or fails its checksum.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise CompactFileError(f"cannot read compact file {path}: {error.strerror}") from None
    if not (data.startswith(MAGIC) or MAGIC.startswith(data)):
        raise CompactFileError(f"{path} is not an ssm_keras compact file (wrong magic bytes)")
    if len(data) < _PREFIX.size:
        raise CompactFileError(f"compact file {path} is truncated ({len(data)} bytes)")
    _, version, header_size, payload_size = _PREFIX.unpack_from(data)
    if version not in READABLE_VERSIONS:
        raise CompactFileError(
            f"compact file {path} has format version {version}; this ssm_keras "
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    body_size = _PREFIX.size + header_size + payload_size
    if len(data) != body_size + _CHECKSUM_SIZE:
        raise CompactFileError(
            f"compact file {path} is truncated or damaged: it has {len(data)} "
            f"bytes, its sizes announce {body_size + _CHECKSUM_SIZE}"
        )
    if hashlib.sha256(data[:body_size]).digest() != data[body_size:]:
        raise CompactFileError(f"compact file {path} is corrupt (SHA-256 checksum mismatch)")
    header_bytes = data[_PREFIX.size : _PREFIX.size + header_size]
    try:
        header = decompress_header(header_bytes)
    except (zlib.error, UnicodeDecodeError, ValueError) as error:
        raise CompactFileError(f"compact file {path} has an unreadable header ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CompactFileError(f"{path} has format {found!r}, not {FORMAT!r}")
    if version == 1:
        header = _as_version_2(header)
    return header, data[_PREFIX.size + header_size : body_size]


def _as_version_2(header):
    """A version-1 header in version 2's terms: its `masked_layers` (one
    record per masked layer, of its `kernel`) as `masked_kernels`."""
    header = dict(header)
    records = header.pop("masked_layers", None)
    if isinstance(records, list):
        records = [{**record, "kernel": "kernel"} if isinstance(record, dict) else record
                   for record in records]
    header["masked_kernels"] = records
    return header


def _blob(payload, reference):
    end = reference["offset"] + reference["size"]
    if end > len(payload):
        raise CompactFileError("a blob reference points past the end of the payload")
    return payload[reference["offset"] : end]


def _stand_in_scores(layer, name, mask):
    """Scores `s` of kernel `name` whose mask `m(s)` is `mask`.

    Threshold masks: `s = mask * (2 tau + 1)`, so `|s| > tau` exactly where
    `mask != 0`. Top-k masks: `s = mask`, whose `k` largest `|s|` are the
    non-zeros (`k` was their count). Bernoulli (expected): `[s > 0] = mask`.
    """
    if layer.mask_kind in choices.THRESHOLD_KINDS:
        return mask * (2.0 * np.float32(layer.threshold_variable(name).numpy()) + 1.0)
    return mask


def _decoded_kernel(record, payload, mask):
    """`(W0, mask)` of the rebuilt layer: `W0 * mask` is the effective kernel."""
    shape = tuple(record["shape"])
    codec = record["codec"]
    if codec == "signed_constant":
        scale = record["scale"]
        largest = float(np.finfo(np.float32).max)
        if not (isinstance(scale, float) and 0 < scale <= largest and np.float32(scale) > 0):
            raise CompactFileError(
                f"layer {record['layer']!r} has scale {scale!r}; a signed-constant scale is a "
                "finite float32 > 0")
        signs = np.where(mask < 0, -1.0, 1.0).astype(np.float32)
        return np.float32(scale) * signs, np.abs(mask)
    if codec == "seeded":
        initializer = keras.initializers.deserialize(record["initializer"])
        kernel = np.asarray(initializer(shape, dtype="float32"))
        if _sha256(kernel) != record["sha256"]:
            raise CompactFileError(
                f"the initial kernel of layer {record['layer']!r} redrawn from its "
                "seed differs from the saved one (another TensorFlow or Keras "
                "version?)"
            )
        return kernel, mask
    if codec == "values":
        values = np.frombuffer(_blob(payload, record["values"]), "<f4")
        if values.size != record["mask"]["count"]:
            raise CompactFileError(f"layer {record['layer']!r} has the wrong number of values")
        _check_stored_finite(f"layer {record['layer']!r}", values)
        kernel = np.zeros(shape, np.float32)
        kernel[mask != 0] = values
        return kernel, np.abs(mask)
    raise CompactFileError(f"layer {record['layer']!r} has unknown codec {codec!r}")


def _check_stored_finite(what, values):
    """Refuses stored values with NaN or infinities: no writer stores them."""
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        count = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise CompactFileError(f"{what} stores {count:,} non-finite values (NaN or infinite)")


def _restore_masked_kernel(layer, name, record, payload):
    kernel_variable = layer.kernel_variable(name)
    shape = tuple(record["shape"])
    if tuple(kernel_variable.shape) != shape:
        raise CompactFileError(
            f"layer {layer.mask_scope!r} has a {name} of shape {tuple(kernel_variable.shape)}, "
            f"the file stores {shape}"
        )
    mask = decode_mask(record["mask"], _blob(payload, record["mask"]), shape)
    kernel, layer_mask = _decoded_kernel(record, payload, mask)
    kernel_variable.assign(kernel)
    layer.scores_variable(name).assign(_stand_in_scores(layer, name, layer_mask))


def _find_variable(leaves, record):
    """The variable of `record` among the variables of `leaves` (the rebuilt
    model's `cloning.leaf_layers`): of the layer at position `leaf` where
    the record has one (its name is shared), else of the one layer named
    `layer`; at position `index` in its weights, or by name in files
    written before positions were stored (a variable created without a
    name gets a different one in every process, e.g. `variable_18`)."""
    key = (record["layer"], record["name"])
    missing = CompactFileError(f"the model has no variable {'/'.join(key)}")
    if "leaf" in record:
        position = record["leaf"]
        if not (0 <= position < len(leaves) and leaves[position].name == record["layer"]):
            raise missing
        layer = leaves[position]
    else:
        named = [layer for layer in leaves if layer.name == record["layer"]]
        if len(named) > 1:
            raise CompactFileError(
                f"the model has {len(named)} layers named {record['layer']!r} (in nested "
                "models), which this file, written before such layers were told apart, "
                "does not tell apart")
        if not named:
            raise missing
        layer = named[0]
    for index, variable in enumerate(layer.weights):
        if index == record["index"] if "index" in record else variable.name == key[1]:
            return variable
    raise missing


def _restore_variable(leaves, record, payload):
    """Restores the variable of one `variables` record (`_find_variable`)."""
    key = (record["layer"], record["name"])
    variable = _find_variable(leaves, record)
    dtype = np.dtype(record["dtype"]).newbyteorder("<")
    value = np.frombuffer(_blob(payload, record), dtype)
    shape = tuple(variable.shape)
    if tuple(record["shape"]) != shape or value.size != math.prod(shape):
        raise CompactFileError(
            f"variable {'/'.join(key)} has shape {shape}, the file stores "
            f"{value.size} values of shape {tuple(record['shape'])}"
        )
    _check_stored_finite(f"variable {'/'.join(key)}", value)
    variable.assign(value.reshape(shape))


def load_compact(path):
    """Rebuilds the masked and the baked model from a compact file.

    Returns:
        A `CompactModel(masked_model, baked_model, metadata)`; the effective
        kernels of both equal those of the saved model.

    Raises:
        CompactFileError: the file is missing, truncated, corrupt, of an
            unknown version, or inconsistent with its model config.
        TypeError, ValueError: `path` is not a str or `os.PathLike`, or empty.
    """
    arguments.path("path", path)
    header, payload = read_compact(path)
    try:
        model = _restore(header, payload, path)
    except CompactFileError as error:
        if str(path) in str(error):
            raise
        raise CompactFileError(f"compact file {path}: {error}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise CompactFileError(
            f"compact file {path} has a malformed header ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(header.get("metadata"), dict):
        raise CompactFileError(f"compact file {path} has a malformed header (metadata)")
    return CompactModel(model, baking.bake(model), header["metadata"])


def _config_layers(model_config):
    """The layer records of a model's `get_config()`, nested models replaced by theirs."""
    for layer in model_config["layers"]:
        if "layers" in layer["config"]:
            yield from _config_layers(layer["config"])
        else:
            yield layer


# Layer arguments that size a layer's weights (dense units, filters, heads,
# embedding tables, ...), checked against the shapes a file records; and
# `output_shape` where it sizes weights (`_weight_axes_of_output`).
_SIZE_ARGUMENTS = ("units", "filters", "depth_multiplier", "input_dim", "output_dim",
                   "num_heads", "key_dim", "value_dim", "head_dim", "num_query_heads",
                   "num_key_value_heads")


def _sizes(value):
    """The ints in a size argument (an int, or a shape with None in it)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [size for size in values if isinstance(size, int) and not isinstance(size, bool)]


def _weight_axes_of_output(config, has_variables):
    """The entries of a layer's `output_shape` that size its weights: of an
    einsum layer's (`EinsumDense`, `equation="abc,cd->abd"`), those on the
    weight's axes (`d`), not those only of the output (`b`, e.g. a sequence
    length); of another layer with variables (`MultiHeadAttention`), all;
    of a layer without (a `Lambda`), none. `output_shape` gives the
    output's axes but the batch axis and those of an ellipsis; an equation
    it does not fit keeps every entry."""
    equation, shape = config.get("equation"), _sizes(config.get("output_shape"))
    if not isinstance(equation, str) or "->" not in equation or "," not in equation:
        return shape if has_variables else []
    inputs, output = equation.split("->", 1)
    weight = inputs.split(",", 1)[1]
    axes = output.replace("...", "")
    if not output.startswith("..."):
        axes = axes[1:]  # the batch axis
    if len(axes) != len(shape):
        return shape
    return [size for axis, size in zip(axes, shape) if axis in weight]


def _check_sizes(header):
    """Refuses a header whose model is not the one its records store, or
    would not fit in this machine's memory, before a variable is allocated.

    Every size argument of a layer config (`units`, `filters`, `num_heads`,
    `input_dim`, ...: `_SIZE_ARGUMENTS`, and `output_shape` where it sizes
    weights, `_weight_axes_of_output`) must be at most the largest
    dimension of the variables the file records for that layer (masked
    kernels, by the first part of their `mask_scope`, and raw variables),
    which holds for every layer type; and the values recorded, kept about
    three times (kernels, scores, the baked copy) as float32, must fit in
    the physical memory.
    """
    records = [*header["masked_kernels"], *header["variables"]]
    shapes = {}
    for record in records:
        shapes.setdefault(record["layer"].split("/")[0], []).append(record["shape"])
    for layer in _config_layers(header["model"]):
        config = layer["config"]
        recorded = shapes.get(config.get("name"), [])
        largest = max((size for shape in recorded for size in shape), default=0)
        sizes = {key: _sizes(config.get(key)) for key in _SIZE_ARGUMENTS}
        sizes["output_shape"] = _weight_axes_of_output(config, bool(recorded))
        for key, values in sizes.items():
            if any(size > largest for size in values):
                raise CompactFileError(
                    f"layer {config.get('name')!r} has {key}={config[key]}, but the file records "
                    f"variables of shapes {recorded} for it"
                )
    values = sum(math.prod(record["shape"]) for record in records)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if 3 * 4 * values > memory:
        raise CompactFileError(
            f"its model has {values:,} values, more than this machine's {memory / 2**30:.1f} "
            "GiB of memory can hold"
        )


def _restore(header, payload, path):
    """The masked model a checked header describes, its variables restored."""
    _check_sizes(header)
    try:
        model_class = keras.Sequential if header.get("model_class") == "Sequential" else keras.Model
        model = model_class.from_config(header["model"])
    except (TypeError, ValueError, KeyError) as error:
        if "safe_mode" in str(error):
            raise CompactFileError(
                f"compact file {path}: its model holds Python code (a Lambda layer), which Keras "
                "rebuilds only after keras.config.enable_unsafe_deserialization(); call that "
                "before load_compact if you trust the file") from None
        raise CompactFileError(f"compact file {path}: cannot rebuild its model ({error})") from None
    leaves = cloning.leaf_layers(model)
    for layer in leaves:
        if not layer.trainable:  # from its config; the sublayers its build made train
            cloning.freeze(layer)
    for record in header["variables"]:
        _restore_variable(leaves, record, payload)
    kernels = {(layer.mask_scope, name): layer for layer, name in ssm_layers.masked_kernels(model)}
    for record in header["masked_kernels"]:
        key = (record["layer"], record["kernel"])
        if key not in kernels:
            raise CompactFileError(f"the model has no masked kernel {'/'.join(key)!r}")
        _restore_masked_kernel(kernels[key], record["kernel"], record, payload)
    return cloning.refresh_normalizations(model)

