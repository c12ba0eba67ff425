"""The bytes `torch.save` writes for an object without tensors, made without torch.

torch.save's format (since PyTorch 1.6) is an uncompressed zip archive whose records
sit in one folder named after the file: `data.pkl` (the object pickled with protocol
2), `.format_version`, `.storage_alignment`, `byteorder`, `version` and
`.data/serialization_id`.  Objects made only of dicts, lists, tuples and strings need
no storage records, and `torch.load(..., weights_only=True)` accepts them.  Our
serialization id is derived from the pickle (torch draws a random one), and every
record's timestamp is the zip epoch, so equal objects give equal bytes (docs/loaders.md).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from typing import Any

_EPOCH = (1980, 1, 1, 0, 0, 0)


def torch_save_bytes(obj: Any, folder: str) -> bytes:
    """What torch.save(obj, f"{folder}.bin") writes, `obj` holding no tensors."""
    data = pickle.dumps(obj, protocol=2)
    serial = str(int.from_bytes(hashlib.sha256(data).digest()[:16], "big")).zfill(40)[:40]
    records = (("data.pkl", data), (".format_version", b"1"), (".storage_alignment", b"64"),
               ("byteorder", b"little"), ("version", b"3\n"),
               (".data/serialization_id", serial.encode()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, payload in records:
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=_EPOCH)
            info.create_system = 0
            z.writestr(info, payload)
    return buf.getvalue()


def torch_load_plain(data: bytes) -> Any:
    """The object of torch_save_bytes' output (for check): only plain containers unpickled."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError("no data.pkl record: not a torch.save file")
        return _PlainUnpickler(io.BytesIO(z.read(pkl[0]))).load()


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name}: only plain containers are expected")
