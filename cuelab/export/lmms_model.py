"""`--model cuelab` for lmms-eval 0.7: the exported cuelab benchmark scored with `cuelab eval`'s own scorer
(cuelab/export/harness.py), for every model family cuelab supports.

    lmms-eval eval --include_path EXPORT --tasks cuelab_<name> --model cuelab \\
        --model_args run=RUN_DIR,model=pretrained            # or finetuned: the run's LoRA on its base
    lmms-eval eval ... --model_args pretrained=Qwen/Qwen3-VL-2B-Instruct,config=EXPORT/cuelab_config.yaml

model_args: `run` + `model`, or `pretrained` [+ `adapter`] [+ `config`]; `rule` (sum | mean, default the
config's eval.rule); `greedy` (true: is_greedy from greedy decoding under the choice grammar, slower;
default: whether the rule picks the choice); `device` (default: lmms-eval's --device, else CUDA when
present). `loglikelihood` returns minus the log-likelihood (lmms-eval's multiple-choice tasks pick the
lowest), `generate_until` cuelab's sampler's text. lmms-eval's --batch_size is not used: as in `cuelab eval`,
all the questions and choices of one video are scored together.

Imports lmms-eval: load it only inside lmms-eval's environment (scripts/setup_lmms.sh builds one).
"""

from __future__ import annotations

from lmms_eval.api.model import lmms

from cuelab.export.harness import HarnessScorer, Request, model_settings


def _request(inst, task_dict, kind: str) -> Request:
    """A cuelab Request from an lmms-eval Instance: args (context, continuation or gen kwargs, doc_to_visual,
    doc_id, task, split)."""
    context, second, doc_to_visual, doc_id, task, split = inst.args[:6]
    doc = task_dict[task][split][doc_id]
    visuals = doc_to_visual(doc) if doc_to_visual is not None else []
    if kind == "loglikelihood":
        return Request(doc, context, visuals, group=(task, split), continuation=second)
    return Request(doc, context, visuals, group=(task, split), gen=dict(second or {}))


class CuelabLMM(lmms):
    """lmms-eval's model interface over cuelab's HarnessScorer."""

    is_simple = True

    def __init__(self, pretrained: str | None = None, adapter: str | None = None, config: str | None = None,
                 run: str | None = None, model: str = "pretrained", rule: str | None = None,
                 greedy: bool = False, device: str | None = None, batch_size=1, max_batch_size=None,
                 **unknown) -> None:
        super().__init__()
        if unknown:
            raise ValueError(f"cuelab model: unknown model_args {sorted(unknown)} (known: run, model, pretrained, "
                             "adapter, config, rule, greedy, device)")
        settings = model_settings(pretrained=pretrained, adapter=adapter, config=config, run=run, model=model)
        self.scorer = HarnessScorer(settings, device=device or None, rule=rule, greedy=greedy)
        self._device = self.scorer.backend.scorer.device

    @property
    def device(self):
        return self._device

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return self.scorer.loglikelihood([_request(r, self.task_dict, "loglikelihood") for r in requests])

    def generate_until(self, requests) -> list[str]:
        return self.scorer.generate([_request(r, self.task_dict, "generate") for r in requests])

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("cuelab questions are single-turn: use the generation tasks (generate_until)")
