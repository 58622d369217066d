"""bench.sft_prefix_tokens: the tokens a shared system turn takes out of a step, on the recipe's chats."""

from bench.sft_prefix_tokens import PrefixTokensConfig, prefix_tokens
from tests.recipes.test_sft_recipe import workdir  # noqa: F401 (fixture)


def test_decoder_tokens_are_chat_tokens_less_the_repeated_prefix(workdir):  # noqa: F811
    r = prefix_tokens(PrefixTokensConfig(token_db_dir=str(workdir / "tok"), dqt_path=[str(workdir / "dqt.jsonl")],
                                         batch=4, steps=3))
    assert r["chats"] == 7 and r["prefix"] >= 8  # the system turn (and the user turn's opening) is shared
    assert r["decoder_tokens"] == r["chat_tokens"] - 3 * r["prefix"]
