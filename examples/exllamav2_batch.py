"""Several JSON-constrained jobs at once with ExLlamaV2's dynamic generator (needs a CUDA GPU).

    pip install exllamav2==0.3.2            # with your CUDA build of torch
    python examples/exllamav2_batch.py --model /path/to/exl2-or-fp16-model

Each job gets its own schema filter; the generator batches them, and the filters compute their
masks on its background thread pool while the GPU runs the next forward pass.
"""

from __future__ import annotations

import argparse
import json

WEATHER = {"type": "object", "required": ["city", "unit"], "properties": {
    "city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 14}}}
PERSON = {"type": "object", "required": ["name", "age", "languages"], "properties": {
    "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0, "maximum": 130},
    "languages": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 5}}}
SENTIMENT = {"type": "object", "required": ["label", "score"], "properties": {
    "label": {"enum": ["positive", "neutral", "negative"]}, "score": {"type": "number", "minimum": 0, "maximum": 1}}}

REQUESTS = [
    ("weather", WEATHER, "Give the weather request for a 3-day forecast in Kyoto, in metric units."),
    ("person", PERSON, "Describe a fictional polyglot software engineer."),
    ("sentiment", SENTIMENT, "Classify the sentiment of: 'The battery died after an hour.'"),
]


def parse_args() -> argparse.Namespace:
    """Command line: the model folder and generation limits."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder (EXL2 or FP16 safetensors)")
    parser.add_argument("--max-seq-len", type=int, default=4096)
    parser.add_argument("--max-new-tokens", type=int, default=300)
    return parser.parse_args()


def prompt_for(schema: dict, task: str) -> str:
    """A plain prompt; with an instruct model, wrapping it in its chat template works better."""
    return f"{task}\nAnswer with one JSON object matching this schema:\n{json.dumps(schema)}\nJSON: "


def main() -> None:
    """Load the model, enqueue one filtered job per request, print each result as it finishes."""
    args = parse_args()
    # imported after the arguments, so --help works without CUDA; the adapter comes first
    # because it explains in one paragraph what is missing when exllamav2 cannot load here
    from exl2_enforcer.contrib.exllamav2 import JsonSchemaFilter  # noqa: I001 - first: it checks exllamav2
    from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
    from exllamav2.generator import ExLlamaV2DynamicGenerator, ExLlamaV2DynamicJob, ExLlamaV2Sampler

    config = ExLlamaV2Config(args.model)
    model = ExLlamaV2(config)
    cache = ExLlamaV2Cache(model, max_seq_len=args.max_seq_len, lazy=True)
    model.load_autosplit(cache, progress=True)
    tokenizer = ExLlamaV2Tokenizer(config)
    generator = ExLlamaV2DynamicGenerator(model=model, cache=cache, tokenizer=tokenizer)

    for name, schema, task in REQUESTS:
        json_filter = JsonSchemaFilter(model, tokenizer, schema)
        generator.enqueue(ExLlamaV2DynamicJob(
            input_ids=tokenizer.encode(prompt_for(schema, task), add_bos=True),
            max_new_tokens=args.max_new_tokens,
            gen_settings=ExLlamaV2Sampler.Settings(temperature=0.7, top_p=0.9),
            filters=[json_filter],
            stop_conditions=json_filter.end_ids,  # every eos the model's configs list
            identifier=name,
        ))

    while generator.num_remaining_jobs():
        for result in generator.iterate():
            if result.get("stage") == "streaming" and result.get("eos"):
                text = result["full_completion"]
                print(f"--- {result['identifier']} ({result['eos_reason']})")
                if result["eos_reason"] == "max_new_tokens":  # cut off: a valid prefix, not a value
                    print(text)
                else:
                    print(json.dumps(json.loads(text), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
