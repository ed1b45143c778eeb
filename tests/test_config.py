"""Plugin options: what `dpbench show` reads from an options dataclass."""

import dataclasses

from dpbench.api.config import option_docs


def test_option_docs_read_attribute_docstrings_through_inheritance():
    @dataclasses.dataclass(frozen=True)
    class Base:
        width: int = 3
        """how wide,
        in cells"""
        tags: tuple = ()

    @dataclasses.dataclass(frozen=True)
    class Child(Base):
        name: str = dataclasses.field(default="x")
        """what to call it"""
        items: list = dataclasses.field(default_factory=lambda: [1])

    docs = {d.name: d for d in option_docs(Child)}
    assert list(docs) == ["width", "tags", "name", "items"]
    assert (docs["width"].type, docs["width"].default, docs["width"].doc) == ("int", "3", "how wide, in cells")
    assert docs["tags"].doc == ""
    assert (docs["name"].default, docs["name"].doc) == ("'x'", "what to call it")
    assert docs["items"].default == "[1]"
