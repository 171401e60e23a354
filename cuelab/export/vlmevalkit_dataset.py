"""VLMEvalKit dataset class of a cuelab benchmark: the template `cuelab export --format vlmevalkit` copies (with
ROOT, DATASETS and match_choice filled in) as cuelab_<name>.py. Not importable inside cuelab: it needs VLMEvalKit.

Install it in a VLMEvalKit checkout (VLMEvalKit is not on PyPI):
1. copy cuelab_<name>.py into vlmeval/dataset/;
2. in vlmeval/dataset/__init__.py: `from .cuelab_<name> import CuelabVideoMCQ` and add CuelabVideoMCQ to
   VIDEO_DATASET;
3. optionally, in vlmeval/dataset/video_dataset_config.py, entries such as
   `'cuelab_<name>_plain_8frame': partial(CuelabVideoMCQ, dataset='cuelab_<name>_plain', nframe=8)`;
4. `python run.py --data cuelab_<name>_plain --model Qwen2.5-VL-3B-Instruct` (or a name from step 3).

Each dataset is one condition: <ROOT>/<dataset>.tsv (index, video, question, candidates, answer, ...), videos in
<ROOT>/videos/<condition>/<video>.mp4. The prompt is cuelab's text (question, choices one per line, "Answer with
one of the choices."); a prediction is scored by cuelab's rule: the stripped text equals a choice, else a
case-insensitive match without a closing full stop or quotes. Set CUELAB_VLMEVALKIT_ROOT to move the export.
"""

import json
import os
import os.path as osp

from vlmeval.dataset.video_base import VideoBaseDataset
from vlmeval.smp import dump, load

ROOT = os.environ.get("CUELAB_VLMEVALKIT_ROOT", "__CUELAB_ROOT__")
DATASETS = {}  # dataset name -> condition; filled in by the export
BLIND = "blind"


def match_choice(text, choices):  # replaced by the export with cuelab/export/lmms_task_utils.py's
    raise NotImplementedError


class CuelabVideoMCQ(VideoBaseDataset):
    TYPE = "Video-MCQ"
    MODALITY = "VIDEO"

    def __init__(self, dataset=None, nframe=0, fps=-1):
        super().__init__(dataset=dataset or next(iter(DATASETS)), nframe=nframe, fps=fps)

    @classmethod
    def supported_datasets(cls):
        return list(DATASETS)

    def prepare_dataset(self, dataset):
        condition = DATASETS[dataset]
        return dict(root=osp.join(ROOT, "videos", condition), data_file=osp.join(ROOT, f"{dataset}.tsv"))

    def build_prompt(self, line, video_llm=True):
        """The cued video (a file for video LLMs, sampled frames otherwise; none under `blind`), then cuelab's
        prompt text."""
        if isinstance(line, int):
            line = self.data.iloc[line]
        message = []
        if DATASETS[self.dataset_name] != BLIND:
            video = str(line["video"])
            if video_llm:
                message.append(dict(type="video", value=osp.join(self.data_root, video + ".mp4")))
            else:
                message += [dict(type="image", value=p) for p in self.save_video_frames(video)]
        message.append(dict(type="text", value=line["prompt"]))
        return message

    def evaluate(self, eval_file, **judge_kwargs):
        """Accuracy overall and per question kind; the per-question picks go to <eval_file>_score.tsv."""
        data = load(eval_file)
        picks = [match_choice("" if p != p else str(p), json.loads(c))
                 for p, c in zip(data["prediction"], data["candidates"])]
        data["pick"] = picks
        data["score"] = [int(p == int(a)) for p, a in zip(picks, data["answer_index"])]
        base = osp.splitext(eval_file)[0]
        dump(data, base + "_score.tsv")
        rating = {"overall": float(data["score"].mean()), "n": int(len(data))}
        for kind, group in data.groupby("kind"):
            rating[str(kind)] = float(group["score"].mean())
        dump(rating, base + "_rating.json")
        return rating
