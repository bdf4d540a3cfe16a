"""The default grounding checker, rule by rule, on hand-written cases."""

from __future__ import annotations

from gateway.grounding import Checker
from gateway.grounding.text import split_claims

DOCS = [
    {"id": "report", "content": "Acme Corp reported revenue of $4.2 billion in 2023, up 12% from the year before. "
                                "Chief executive Maria Lopez said the company would not cut jobs this year. "
                                "The new factory in Ohio opened in March."},
    {"id": "profile", "content": "Maria Lopez joined Acme Corp in 2015. Before that she led operations at Globex."},
]
check = Checker().check


def one(text: str, question: str | None = None):
    result = check(text, DOCS, question)
    assert len(result.claims) == 1, result.claims
    return result, result.claims[0]


def test_a_supported_sentence_with_its_citation() -> None:
    result, claim = one("Acme Corp reported revenue of $4.2 billion in 2023.")
    assert result.grounded and claim.supported and claim.citations == ["report"]
    assert claim.support_score > 0.8


def test_a_changed_number_is_not_supported() -> None:
    _, claim = one("Acme Corp reported revenue of $5.7 billion in 2023.")
    assert not claim.supported and any("5.7" in r for r in claim.reasons)
    _, claim = one("Acme Corp's revenue grew 21% in 2023.")
    assert not claim.supported


def test_a_swapped_name_is_not_supported() -> None:
    _, claim = one("Chief executive Daniel Okafor said the company would not cut jobs this year.")
    assert not claim.supported and any("daniel" in r or "okafor" in r for r in claim.reasons)


def test_a_flipped_negation_is_not_supported() -> None:
    _, claim = one("Chief executive Maria Lopez said the company would cut jobs this year.")
    assert claim.support_score < one("Chief executive Maria Lopez said the company would not cut jobs this year.")[
        1].support_score
    assert not claim.supported or "negation differs from the best passage" in claim.reasons


def test_a_supported_paraphrase() -> None:
    _, claim = one("The company's chief executive, Maria Lopez, said Acme would not cut jobs.")
    assert claim.supported


def test_hedges_and_restating_the_question_are_not_hallucinations() -> None:
    for text in ("I don't know.", "The documents do not mention the factory's size.",
                 "Based on the provided passages, here is the answer:"):
        result, claim = one(text)
        assert result.grounded and claim.supported and "neutral" in claim.reasons, text
    result, claim = one("What was Acme's revenue?", question="What was Acme's revenue in 2023?")
    assert claim.supported


def test_a_claim_combining_two_documents() -> None:
    _, claim = one("Maria Lopez, who joined Acme Corp in 2015, said the company would not cut jobs.")
    assert claim.supported and set(claim.citations) == {"report", "profile"}


def test_an_invented_claim_is_flagged_and_the_answer_is_not_grounded() -> None:
    result = check("Acme Corp reported revenue of $4.2 billion in 2023. The company also acquired Initech for "
                   "$800 million.", DOCS)
    assert not result.grounded
    assert [c.supported for c in result.claims] == [True, False]
    assert result.support_score == min(c.support_score for c in result.claims)


def test_claims_carry_exact_offsets() -> None:
    text = "Acme grew 12%.\n\n* The factory is in Ohio.\n- It opened in March!"
    spans = split_claims(text)
    assert [s.text for s in spans] == ["Acme grew 12%.", "The factory is in Ohio.", "It opened in March!"]
    assert all(text[s.start:s.end] == s.text for s in spans)


def test_concurrent_checks_in_threads_do_not_mix_their_documents() -> None:
    """The API runs large checks in threads on one shared checker: each check must keep its own index."""
    from concurrent.futures import ThreadPoolExecutor

    shared = Checker()
    filler = " ".join(f"Unrelated sentence number {i} about widgets and gadgets." for i in range(400))
    cases = [("Acme Corp reported revenue of $4.2 billion in 2023.", [{"id": "acme", "content": DOCS[0]["content"]
                                                                       + " " + filler}]),
             ("Globex opened a plant in Texas in 1999.", [{"id": "globex", "content": "Globex opened a plant in "
                                                           "Texas in 1999. " + filler}])]
    expected = [Checker().check(text, docs).to_dict() for text, docs in cases]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: shared.check(*cases[i % 2]).to_dict(), range(64)))
    assert all(r == expected[i % 2] for i, r in enumerate(results))


def test_prepared_documents_are_reused_and_bounded_and_never_stale() -> None:
    from gateway.grounding import checker as module

    text = "Acme Corp reported revenue of $4.2 billion in 2023. The factory in Ohio opened in March."
    module._PREPARED.clear()
    first = check(text, DOCS).to_dict()
    assert len(module._PREPARED) == len(DOCS)
    assert check(text, DOCS).to_dict() == first  # from the cache: the same answer
    # same id, new content: the cache is keyed by the text itself, so the change is seen
    changed = [{"id": "report", "content": DOCS[0]["content"].replace("$4.2 billion", "$3.1 billion")}, DOCS[1]]
    assert not check(text, changed).grounded
    for i in range(module._PREPARED_MAX + 10):
        check("Something else.", [{"id": "x", "content": f"Document number {i} says something."}])
    assert len(module._PREPARED) == module._PREPARED_MAX


def test_abbreviations_and_initials_do_not_end_a_sentence() -> None:
    text = "Rep. Maria Lopez of Acme Corp. spoke. George W. Bush did not. It opened on Sat. in March."
    assert [s.text for s in split_claims(text)] == [
        "Rep. Maria Lopez of Acme Corp. spoke.", "George W. Bush did not.", "It opened on Sat. in March."]


def test_refusals_made_of_source_talk_are_neutral() -> None:
    for text in ("Unable to answer based on given passages.",
                 "Therefore, I am unable to answer the question in its entirety based on the provided passages.",
                 "Passage 2 provides the necessary information to answer the question."):
        result, claim = one(text)
        assert result.grounded and "neutral" in claim.reasons, text


def test_a_refusal_that_slips_in_a_claim_is_still_checked() -> None:
    result, claim = one("The passages do not say, but Acme Corp was founded by Pierre Dupont in Lyon in 1921.")
    assert not result.grounded and "neutral" not in claim.reasons


def test_list_numbers_and_ordinal_words_are_not_numbers() -> None:
    result = check("1. Acme Corp reported revenue of $4.2 billion in 2023.\n2.\nFirst, the factory in Ohio opened "
                   "in March.", DOCS)
    assert result.grounded, result.to_dict()


def test_names_and_numbers_from_the_question_are_given() -> None:
    docs = [{"id": "w", "content": "In Tallahassee the average high is 79 degrees and the average low is 56."}]
    result = check("The average high in Tallahassee, Florida is 79 degrees Fahrenheit.", docs,
                   "temperature for tallahassee florida")
    assert result.grounded, result.to_dict()
    # without the question, Florida is a name nobody gave
    assert not check("The average high in Tallahassee, Florida is 79 degrees Fahrenheit.", docs).grounded


def test_advice_and_long_lead_ins_are_neutral() -> None:
    for text in ("It's important to check the warranty before you buy.",
                 "Additionally, it's crucial to respect your coworker's boundaries at work.",
                 "Therefore, the answer to the question \"What did Acme Corp report about revenue in 2023?\" "
                 "based on these passages is:"):
        result = check(text, DOCS, "What did Acme Corp report about revenue in 2023?")
        assert result.grounded and all("neutral" in c.reasons for c in result.claims), text


def test_date_abbreviations_are_not_names() -> None:
    docs = [{"id": "p", "content": "National parks are free on Saturday and Sunday during National Park Week, "
                                   "April 18 to 26."}]
    result = check("National parks are free on Sat. and Sun. during National Park Week (Apr. 18-26).", docs)
    assert result.grounded, result.to_dict()


def test_a_claim_that_admits_the_documents_do_not_hold_it_is_unsupported() -> None:
    result, claim = one("Acme Corp also makes bicycles (not explicitly mentioned in the passages).")
    assert not result.grounded and not claim.supported and "neutral" not in claim.reasons
    result, claim = one("The passages do not say whether Acme Corp makes bicycles.")  # a hedge, not a claim
    assert result.grounded and "says itself the documents do not state it" not in claim.reasons


RECORD = [{"id": "business", "content": "Name: Harbor Cafe\nCategories: Coffee, Breakfast\nAttributes:\n"
                                        "- Outdoor seating: no\n- Takes reservations: yes\n- WiFi: free\n"
                                        "- Parking: garage: no, street: yes, valet: no\n"
                                        "- Ambience: romantic: no, casual: yes"}]


def test_claims_against_a_records_yes_no_attributes() -> None:
    def verdict(text: str) -> bool:
        result = check(text, RECORD)
        assert len(result.claims) == 1
        return result.claims[0].supported

    assert not verdict("Harbor Cafe offers outdoor seating for breakfast.")         # the record says no
    assert not verdict("Harbor Cafe does not take reservations.")                  # the record says yes
    assert not verdict("Harbor Cafe has a romantic ambience and valet parking.")
    assert verdict("Harbor Cafe has no outdoor seating, but it takes reservations.")  # both agree
    assert verdict("Harbor Cafe offers free WiFi and street parking.")
    assert verdict("Harbor Cafe serves breakfast coffee beside a garage.")  # a garage, not garage parking
    assert not verdict("Harbor Cafe offers breakfast coffee and garage parking.")
    claim = check("Harbor Cafe offers outdoor seating.", RECORD).claims[0]
    assert any("outdoor seat" in r and "says no" in r for r in claim.reasons)


def test_the_verifier_request_and_verdicts() -> None:
    import pytest

    from gateway.grounding import verifier

    result = check("Sure! Acme Corp reported revenue of $4.2 billion in 2023. The factory opened in March.", DOCS)
    body, judged = verifier.request_body("judge", result, DOCS, "How did Acme do?")
    assert len(judged) == 2 and "CLAIM 1: Acme Corp reported" in body["messages"][-1]["content"]  # framing skipped
    merged = verifier.merge(result, judged, '{"verdicts": [{"claim": 2, "supported": false, "score": 0.9}, '
                                            '{"claim": 7, "supported": true}]}', 0.35)
    second = merged.claims[judged[1]]
    assert not second.supported and second.support_score < 0.35  # the verdict decides; the score follows it
    assert merged.claims[judged[0]].supported and not merged.grounded  # claim 1 unjudged: the checker's stands
    with pytest.raises(ValueError):
        verifier.merge(result, judged, "I think they are fine", 0.35)
