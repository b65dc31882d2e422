"""The questions of `make quality` (issue #12): open questions that a panel of small
models should answer with a position, not restate or answer with questions.

Eight questions, two from each of four fields, so that no one kind of question
decides the measurement: policy (car-free centres, basic income), science
(humans to Mars, gain-of-function research), engineering (monolith or
microservices, Rust or C++) and ethics (AI screening of applicants, open
training code). Each is one sentence that a reader can answer yes, no or with
a choice between two named options, as real users ask; none has an answer key,
so the measurement is of the debate's form (headlines, answer lines, turns that
fail, stated and actual changes of mind), never of who is right.

The ids and texts are fixed: a changed question makes earlier measurements
incomparable, and the question set's sha256 in batch.json shows it.
"""

from __future__ import annotations

from localtable.research.questions import Question, QuestionSet, questions_sha256

QUESTIONS: list[tuple[str, str]] = [
    # policy
    ("car-free-centres", "Should cities ban private cars from their centres?"),
    ("basic-income", "Should governments introduce a universal basic income?"),
    # science
    (
        "humans-to-mars",
        "Should humans be sent to Mars within the next 20 years, rather than only robots?",
    ),
    (
        "gain-of-function",
        "Should gain-of-function research on potentially pandemic pathogens be allowed?",
    ),
    # engineering
    (
        "monolith-or-microservices",
        "Should a five-person startup build its backend as microservices or as a single monolith?",
    ),
    ("rust-over-cpp", "Should new systems software be written in Rust rather than C++?"),
    # ethics
    ("ai-hiring", "Is it ethical for companies to use AI to screen job applicants?"),
    ("open-training-code", "Should the training code of frontier AI models be open source?"),
]


def question_set() -> QuestionSet:
    questions = [Question(id=qid, question=text, kind="open") for qid, text in QUESTIONS]
    return QuestionSet(
        name="quality",
        source="task:quality",
        sha256=questions_sha256(questions),
        questions=questions,
    )
