"""LoRA adapters on the shared generator and the completions they are trained on: what POPri's
DPO and PE+SFT's fine-tuning share."""

from __future__ import annotations

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_config(model, *, r: int, alpha: int):
    """peft's ``LoraConfig`` of rank ``r`` and scale ``alpha`` on whichever attention and MLP
    projections ``model`` has, dropout 0 (so a step draws nothing at random)."""
    from peft import LoraConfig

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                      target_modules=[t for t in LORA_TARGETS if t in present], task_type="CAUSAL_LM")


def trl_completion(text: str, prompt_style: str):
    """``text`` as trl takes a completion after a prompt of ``prompt_style``: an assistant
    message after a chat prompt, the text after a space after a plain one."""
    if prompt_style == "chat":
        return [{"role": "assistant", "content": text}]
    return " " + text
