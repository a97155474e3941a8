"""Recall: a user's document, found by the turn's last messages, is put into the system prompt
and returned with the answer."""

from __future__ import annotations

from mintleaf import v1

from .test_chat import make_agent, make_session, make_user, say


def test_recall_puts_a_users_document_into_the_prompt(chat_client, model):
    user = make_user(chat_client, "Bob")
    other = make_user(chat_client, "Eve")
    agent = make_agent(chat_client, "Ada")
    doc = chat_client.docs.create_doc(
        v1.CreateDocRequest(
            user_id=user.id,
            doc=v1.Doc(title="Bob's garden", content=["Bob grows purple tomatoes on his balcony."]),
        )
    )
    # Another user's doc on the same subject is not searched: the session's users and agent only.
    chat_client.docs.create_doc(
        v1.CreateDocRequest(
            user_id=other.id,
            doc=v1.Doc(title="Eve's garden", content=["Eve grows purple tomatoes in her yard."]),
        )
    )
    s = make_session(
        chat_client,
        agent=agent.id,
        user=user.id,
        recall_options=v1.RecallOptions(mode=v1.DocSearchMode.TEXT, limit=5),
    )
    r = say(chat_client, s.id, "What colour are the tomatoes I grow?")
    assert [d.id for d in r.docs] == [doc.id]
    ref = r.docs[0]
    assert ref.owner_type == v1.DocOwnerType.USER and ref.owner_id == user.id
    assert ref.title == "Bob's garden"
    assert ref.snippets == ["Bob grows purple tomatoes on his balcony."]
    system = model.chat_requests[-1]["messages"][0]["content"]
    assert "Relevant documents:\nBob's garden\nBob grows purple tomatoes on his balcony.\n---" in system
    assert "Eve" not in system
    # recall=false turns it off for one turn; RenderChat shows the recalled docs too.
    r = say(chat_client, s.id, "What colour are the tomatoes I grow?", recall=False)
    assert list(r.docs) == []
    assert "Relevant documents" not in model.chat_requests[-1]["messages"][0]["content"]
    rendered = chat_client.chat.render_chat(
        v1.ChatRequest(session_id=s.id, messages=[v1.ChatMessage(role="user", content="my tomatoes")])
    )
    assert [d.id for d in rendered.docs] == [doc.id]
