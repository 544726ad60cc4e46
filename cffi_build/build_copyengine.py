"""cffi (API mode) builder of bulkhead_wire._copyengine, the C copy engine of the data channel.

`pip install .` builds it through setuptools' `cffi_modules` (see pyproject.toml / setup.py).
Run directly, it builds the module into a directory of your choice, for tests and benchmarks:

    python cffi_build/build_copyengine.py --outdir /tmp/ce            # -> /tmp/ce/bulkhead_wire/
    python cffi_build/build_copyengine.py --outdir /tmp/ce-asan --sanitize

--sanitize (or BULKHEAD_CE_SANITIZE=1) compiles with -fsanitize=address,undefined; such a module
only loads into a Python started with LD_PRELOAD=$(gcc -print-file-name=libasan.so).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
MODULE = "bulkhead_wire._copyengine"

# Mirrors copyengine.h (cffi's cdef cannot read a real header); tests check the constants
# against wire/bulkhead_wire/stdio/channel.py.
CDEF = """
#define CE_HEADER_SIZE 9
#define CE_KIND_DATA 1
#define CE_KIND_EOF 2
#define CE_KIND_CREDIT 3
#define CE_MAX_CHUNK 65536
#define CE_WINDOW 1048576
#define CE_ERRLEN 256
#define CE_PARSE_NEED_MORE 0
#define CE_PARSE_ERROR -1
#define CE_OUT 1
#define CE_IN 2
#define CE_SPLICE_OFF 0
#define CE_SPLICE_ON 1
#define CE_SPLICE_TEST_FALLBACK 2

struct ce_frame {
    uint32_t stream;
    uint8_t kind;
    uint32_t length;
    uint32_t credit;
    size_t size;
};
long ce_parse(const uint8_t *buf, size_t len, struct ce_frame *frame, char *err, size_t errlen);
void ce_encode_header(uint8_t *out, uint32_t stream, uint8_t kind, uint32_t length);

struct ce_status {
    uint32_t stream;
    int direction;
    uint64_t taken;
    uint64_t done;
    int eof;
    int finished;
    int error;
};
struct ce_counters {
    uint64_t frames_in;
    uint64_t frames_out;
    uint64_t channel_reads;
    uint64_t channel_writes;
    uint64_t dropped_bytes;
    uint64_t spliced_bytes;
};

struct ce_engine;
struct ce_engine *ce_new(int channel_fd, uint32_t window, char *err, size_t errlen);
int ce_start(struct ce_engine *e);
void ce_set_splice(struct ce_engine *e, int mode);
int ce_notify_fd(struct ce_engine *e);
int ce_add(struct ce_engine *e, uint32_t stream, int direction, int fd);
int ce_close_output(struct ce_engine *e, uint32_t stream);
int ce_abort_output(struct ce_engine *e, uint32_t stream);
int ce_remove(struct ce_engine *e, uint32_t stream, int direction);
int ce_status(struct ce_engine *e, uint32_t stream, int direction, struct ce_status *out);
int ce_exit_mark(struct ce_engine *e, uint32_t stream, uint64_t *mark);
int ce_poll(struct ce_engine *e, struct ce_status *out, int max, int *closed);
void ce_close_reason(struct ce_engine *e, char *out, size_t outlen);
void ce_get_counters(struct ce_engine *e, struct ce_counters *out);
void ce_free(struct ce_engine *e);
"""

COMMON_FLAGS = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-pthread"]
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                  "-fno-omit-frame-pointer", "-g", "-O1"]


def make_builder(sanitize: bool = False, absolute: bool = False) -> FFI:
    """The FFI builder. setuptools wants sources relative to the working directory (pip builds
    from the project root); FFI.compile() changes into its tmpdir, so it needs them absolute."""
    source = str(HERE / "copyengine.c") if absolute else os.path.relpath(HERE / "copyengine.c")
    include = str(HERE) if absolute else os.path.relpath(HERE)
    compile_args = COMMON_FLAGS + (SANITIZE_FLAGS if sanitize else ["-O2"])
    link_args = ["-pthread"] + (SANITIZE_FLAGS[:1] if sanitize else [])
    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(MODULE, '#include "copyengine.h"', sources=[source],
                       include_dirs=[include], extra_compile_args=compile_args,
                       extra_link_args=link_args)
    return builder


ffibuilder = make_builder(sanitize=os.environ.get("BULKHEAD_CE_SANITIZE") == "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, required=True,
                        help="where to put bulkhead_wire/_copyengine*.so (and the generated C)")
    parser.add_argument("--sanitize", action="store_true",
                        help="build with AddressSanitizer and UBSan")
    args = parser.parse_args()
    builder = make_builder(args.sanitize or os.environ.get("BULKHEAD_CE_SANITIZE") == "1",
                           absolute=True)
    args.outdir.mkdir(parents=True, exist_ok=True)
    print(builder.compile(tmpdir=str(args.outdir), verbose=False))


if __name__ == "__main__":
    main()
