"""Copy the part of the recorded reference fixture that the tests read into tests/fixtures/.

The full fixture lives in ../shared/fixtures/videochat_flash_original (26 MB of arrays). A
fresh clone without ../shared runs the tests on this subset: the tiny model folder, the
JSON facts, and only the arrays listed in KEYS (large ones sliced, see SLICES).

    python tools/make_test_fixtures.py [--src DIR] [--dst DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "..", "shared", "fixtures", "videochat_flash_original")
DST = os.path.join(ROOT, "tests", "fixtures", "videochat_flash_original")

KEYS = [
    # prompt and preprocessing
    "prompt16/input_ids",
    "preprocess/pixel_values16_frame0",
    "preprocess/resize_raw_uint8",
    "preprocess/resize_pixel_values",
    # vision tower, ToMe, projector
    "L4/vit_pos_embed",
    "L4/vit_out",
    "L4/tome_out",
    "L4/tome_assign",
    "L8/vit_out_clip0",
    "L8/tome_out",
    "L8/tome_assign",
    "L4/proj_out",
    # LLM, LP-Comp, decoding
    "L4/inputs_embeds",
    "L4/base/logits",
    "L4/base/greedy_ids",
    "L4/base/evalstyle_ids",
    "L4/base/decode_position_ids",
    "L4/lp/logits",
    "L4/lp/last_logits",
    "L4/lp/layer_seq_len",
    "L8/lp/layer_seq_len",
    "L4/lp/greedy_ids",
    "L4/lp/evalstyle_ids",
    "L4/lp/decode_position_ids",
    "L4/lp/layer_input_last_hidden",
    "L4trunc4/base/last_logits",
    "L4trunc4/lp/last_logits",
    "L4trunc4/lp/layer_seq_len",
    # QC-Comp
    "qc128/input_ids",
    "qc128/clip_scores",
    "qc128/layer_input_hidden_L0",
    "qc128/layer_input_hidden_L12",
    "qc128/layer_input_hidden_L24",
    "qcfull/segment_starts",
    "qcfull/segment_clip_scores",
    "qcfull/frame_score",
    "qcfull/selected_idx",
]
# Arrays kept only in part: key → slice of the leading axis.
SLICES = {"L4/vit_out": slice(0, 1)}

# Other recorded families: name → the arrays their tests read (whole; copied next to the tiny folder).
OTHER_KEYS = {
    "videoxl_pro": [
        "video/frames_uint8", "video/frame_idx", "preprocess/resized_uint8_frame0", "preprocess/pixel_values_mean",
        "preprocess/pixel_values_abs_sum", "prompt/input_ids", "prompt/time_embedding", "vision/vit_features",
        "vision/interpolated", "vision/pad_repeat_counts", "dts/layer0_out_group0", "dts/layer1_out_group0",
        "dts/layer2_out_group0", "dts/output", "vision/projector_out", "vision/pooled", "selector/visual_seq",
        "selector/text_ids", "selector/text_feat", "selector/wtta_out", "selector/scores", "selector/rotary_out",
        "selector/kept_visual_positions", "selector/drop_rate", "alt/drop_rate", "alt/kept_visual_positions",
        "alt/last_logits", "llm/inputs_embeds", "llm/final_norm_hidden", "llm/logits_suffix", "llm/last_logits",
        "greedy/ids", "greedy/step_logits",
    ],
    # the Video-XL-2 front end (tests/test_dts_frontend.py)
    "videoxl2": ["common/frames_uint8", "common/frame_idx", "common/timestamps", "common/time_embedding",
                 "common/input_ids", "common/pooled", "common/inputs_embeds"],
}


def copy_other(name: str, keys: list[str], src_root: str, dst_root: str) -> None:
    """Copy tiny_<name>/, its ref json and the `keys` arrays of `<src_root>/<name>_original`."""
    src, dst = os.path.join(src_root, f"{name}_original"), os.path.join(dst_root, f"{name}_original")
    model = f"tiny_{name}"
    os.makedirs(dst, exist_ok=True)
    shutil.copytree(os.path.join(src, model), os.path.join(dst, model), dirs_exist_ok=True)
    shutil.copy2(os.path.join(src, f"{model}_ref.json"), dst)
    ref = np.load(os.path.join(src, f"{model}_ref.npz"))
    out = os.path.join(dst, f"{model}_ref_subset.npz")
    np.savez_compressed(out, **{k: ref[k] for k in keys})
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB, {len(keys)} arrays)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=SRC)
    ap.add_argument("--dst", default=DST)
    args = ap.parse_args(argv)
    npz = os.path.join(args.src, "tiny_videochat_flash_ref.npz")
    if not os.path.isfile(npz):
        print(f"make_test_fixtures: {npz} not found", file=sys.stderr)
        return 1
    os.makedirs(args.dst, exist_ok=True)
    shutil.copytree(os.path.join(args.src, "tiny_videochat_flash"), os.path.join(args.dst, "tiny_videochat_flash"),
                    dirs_exist_ok=True)
    shutil.copy2(os.path.join(args.src, "tiny_videochat_flash_ref.json"), args.dst)
    ref = np.load(npz)
    subset = {k: ref[k][SLICES[k]] if k in SLICES else ref[k] for k in KEYS}
    out = os.path.join(args.dst, "tiny_videochat_flash_ref_subset.npz")
    np.savez_compressed(out, **subset)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB, {len(subset)} arrays)")
    for name, keys in OTHER_KEYS.items():
        copy_other(name, keys, os.path.dirname(os.path.abspath(args.src)), os.path.dirname(os.path.abspath(args.dst)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
