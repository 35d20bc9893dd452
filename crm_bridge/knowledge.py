"""Knowledge articles agents read out, per request type, in the caller's language.

A translation may lag behind: an article missing in the caller's language falls back to
the other national language, then English, and says which language it is in (``lang``),
so the console can flag it rather than show nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from crm_bridge.case_models import KnowledgeArticle
from crm_bridge.db import session_factory
from crm_bridge.utc import utc_now

ARTICLE_LANGUAGES: tuple[str, ...] = ("fr", "nl", "en")
FALLBACK: dict[str, tuple[str, ...]] = {
    "fr": ("fr", "nl", "en"),
    "nl": ("nl", "fr", "en"),
    "en": ("en", "fr", "nl"),
    "de": ("fr", "nl", "en"),  # the third national language has no articles (yet)
}


@dataclass(frozen=True, slots=True)
class ArticleView:
    slug: str
    request_type: str
    lang: str  # the language of title and body, which may be a fallback
    title: str
    body: str
    tags: tuple[str, ...]


def _in_language(article: KnowledgeArticle, lang: str) -> ArticleView | None:
    for candidate in FALLBACK.get(lang, FALLBACK["fr"]):
        title = getattr(article, f"title_{candidate}")
        body = getattr(article, f"body_{candidate}")
        if title and body:
            return ArticleView(
                slug=article.slug,
                request_type=article.request_type,
                lang=candidate,
                title=title,
                body=body,
                tags=tuple(article.tags),
            )
    return None


class KnowledgeBase:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = session_factory(engine)

    async def upsert(
        self,
        slug: str,
        request_type: str,
        *,
        titles: Mapping[str, str],
        bodies: Mapping[str, str],
        tags: Iterable[str] = (),
    ) -> None:
        """Create or replace the article ``slug`` (languages not given are cleared)."""
        unknown = (set(titles) | set(bodies)) - set(ARTICLE_LANGUAGES)
        if unknown:
            raise ValueError(f"articles are written in {', '.join(ARTICLE_LANGUAGES)}, "
                             f"not {', '.join(sorted(unknown))}")  # fmt: skip
        async with self._sessions() as session, session.begin():
            result = await session.exec(
                select(KnowledgeArticle).where(KnowledgeArticle.slug == slug)
            )
            article = result.first() or KnowledgeArticle(slug=slug, request_type=request_type)
            article.request_type = request_type
            for lang in ARTICLE_LANGUAGES:
                setattr(article, f"title_{lang}", titles.get(lang))
                setattr(article, f"body_{lang}", bodies.get(lang))
            article.tags = list(tags)
            article.updated_at = utc_now()
            session.add(article)

    async def for_request_type(self, request_type: str, lang: str) -> list[ArticleView]:
        """The articles of a request type, in ``lang`` where translated, by title."""
        async with self._sessions() as session:
            result = await session.exec(
                select(KnowledgeArticle)
                .where(KnowledgeArticle.request_type == request_type)
                .order_by(col(KnowledgeArticle.slug))
            )
            views = [_in_language(article, lang) for article in result.all()]
        return sorted((v for v in views if v is not None), key=lambda v: v.title.casefold())

    async def get(self, slug: str, lang: str) -> ArticleView | None:
        async with self._sessions() as session:
            result = await session.exec(
                select(KnowledgeArticle).where(KnowledgeArticle.slug == slug)
            )
            article = result.first()
        return None if article is None else _in_language(article, lang)
