"""Regenerates the fixture notebooks: `.venv/bin/python tests/tee/notebooks/_make.py`.

Each notebook is a hostile (or benign) workload for the sandbox tests; parameters come from the
job environment (TARGET_PATH, TARGET_PORT) so the files stay static.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

NOTEBOOKS: dict[str, list[str]] = {
    "ok_inputs": [
        "import json, os\nimport pandas as pd",
        "meta = json.load(open(os.path.join(os.environ['VEIL_INPUTS'], 'inputs.json')))\n"
        "df = pd.read_parquet(os.path.join(os.environ['VEIL_INPUTS'], meta['files'][0]))",
        "print(df)  # printed rows are discarded, never released",
        "os.makedirs('/outputs/tables', exist_ok=True)\n"
        "df.describe().to_csv('/outputs/tables/summary.csv')\n"
        "open('/outputs/count.txt', 'w').write(str(len(df)))",
    ],
    "zero_div": ["x = 1", "y = 2", "x / 0"],
    "socket_inet": [
        "import os, socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "s.connect(('127.0.0.1', int(os.environ['TARGET_PORT'])))\n"
        "s.sendall(b'leak')",
    ],
    "socket_inet6_udp": [
        "import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
        "s.sendto(b'leak', ('::1', 9))",
    ],
    "read_path": [
        "import os\ndata = open(os.environ['TARGET_PATH'], 'rb').read()\n"
        "open('/outputs/stolen.bin', 'wb').write(data)",
    ],
    "fork_bomb": [
        "import os, time\nchildren = []\n"
        "for _ in range(100000):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(600)\n"
        "        os._exit(0)\n"
        "    children.append(pid)",
    ],
    "alloc_50g": ["blob = bytearray(50 * 1024**3)"],
    "memory_grow": [
        "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024**2))\n"
        "    for i in range(0, len(chunks[-1]), 4096):\n        chunks[-1][i] = 1",
    ],
    "write_10g": [
        "block = b'x' * 1024**2\nwith open('/outputs/big.bin', 'wb') as fh:\n"
        "    for _ in range(10 * 1024):\n        fh.write(block)",
    ],
    "write_many": [
        "block = b'x' * 1024**2\nfor n in range(10 * 1024):\n"
        "    with open(f'/outputs/part{n}.bin', 'wb') as fh:\n"
        "        for _ in range(16):\n            fh.write(block)",
    ],
    "fill_work": [
        "block = b'x' * 1024**2\nfor n in range(10 * 1024):\n"
        "    with open(f'/work/scratch{n}.bin', 'wb') as fh:\n"
        "        for _ in range(16):\n            fh.write(block)",
    ],
    "huge_output": [
        "import sys\nline = 'secret-row,' * 1000\nfor _ in range(20000):\n    print(line)",
        "from IPython.display import display\n"
        "for _ in range(200):\n    display({'text/plain': line})",
        "open('/outputs/done.txt', 'w').write('ok')",
    ],
    "forever": ["import time\nwhile True:\n    time.sleep(0.1)"],
    "cpu_spin": ["x = 0\nwhile True:\n    x += 1"],
    "symlink_out": ["import os\nos.symlink('/etc/passwd', '/outputs/link')"],
    "write_inputs": ["open('/inputs/new.txt', 'w').write('x')"],
    "custom_exception": [
        "class Leak_0123456789(Exception):\n    pass",
        "raise Leak_0123456789('the data')",
    ],
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(
            cells=[new_markdown_cell(f"fixture: {name}"), *(new_code_cell(c) for c in cells)]
        )
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        nbformat.write(nb, HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
