"""The declaration envelope (`declarative/declarations/declarationbase.yaml`) and its token.

Every declaration is `{"Type", "Identifier", "ServerToken", "Payload"}`. Apple asks only that
`ServerToken` change whenever the content changes (`declarationitemsresponse.yaml`: "compute the
token over the entire declaration content"); we use the hex SHA-256 of the canonical JSON of
`{Type, Identifier, Payload}`, so identical content always gets the identical token (64 octets,
Apple's limit).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from managed_os.ddm.categories import Category, ManifestItem, category_for_type
from managed_os.ddm.codec import canonical_json, load_json_object
from managed_os.ddm.errors import DDMProtocolError, InvalidDeclaration

MAX_OCTETS = 64  # Identifier and ServerToken "should not exceed 64 octets" (declarationbase)


def server_token(declaration_type: str, identifier: str, payload: Mapping[str, Any]) -> str:
    """Hex SHA-256 of canonical JSON (sorted keys, no spaces, UTF-8) of Type, Identifier and
    Payload. Raises `InvalidDeclaration` if the payload is not plain JSON data."""
    content = {"Type": declaration_type, "Identifier": identifier, "Payload": payload}
    try:
        encoded = canonical_json(content)
    except (TypeError, ValueError) as exc:
        raise InvalidDeclaration(f"payload of {identifier!r} is not JSON data: {exc}") from exc
    return hashlib.sha256(encoded).hexdigest()


class Declaration(BaseModel):
    """One declaration, as served at `declaration/<category>/<Identifier>`.

    Validated: `Type` must be `com.apple.<category>.<name>`; `Identifier` and `ServerToken` must
    be non-empty and at most 64 UTF-8 octets; `Payload` must be an object. Build new ones with
    `Declaration.build` (computes the token); `from_json` keeps whatever token it is given.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    type: str = Field(alias="Type")
    identifier: str = Field(alias="Identifier")
    server_token: str = Field(alias="ServerToken")
    payload: dict[str, Any] = Field(alias="Payload")

    @field_validator("type")
    @classmethod
    def _known_category(cls, value: str) -> str:
        if category_for_type(value) is None:
            raise ValueError("must be com.apple.<activation|asset|configuration|management>.<name>")
        return value

    @field_validator("identifier", "server_token")
    @classmethod
    def _short_text(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        if len(value.encode("utf-8")) > MAX_OCTETS:
            raise ValueError(f"must not exceed {MAX_OCTETS} octets")
        return value

    @classmethod
    def build(
        cls, declaration_type: str, identifier: str, payload: Mapping[str, Any]
    ) -> Declaration:
        """A new declaration with its `ServerToken` computed; raises `InvalidDeclaration`."""
        token = server_token(declaration_type, identifier, payload)
        data = {"Type": declaration_type, "Identifier": identifier, "ServerToken": token}
        try:
            return cls.model_validate({**data, "Payload": copy.deepcopy(dict(payload))})
        except ValidationError as exc:
            raise InvalidDeclaration(_describe(exc, "declaration")) from exc

    @classmethod
    def from_json(cls, raw: bytes | str | Mapping[str, Any]) -> Declaration:
        """Parse Apple's JSON shape; raises `DDMProtocolError` naming the bad key."""
        data = load_json_object(raw, "declaration")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise DDMProtocolError(_describe(exc, "declaration")) from exc

    @property
    def category(self) -> Category:
        category = category_for_type(self.type)
        assert category is not None  # checked by the validator
        return category

    @property
    def token_is_current(self) -> bool:
        """Whether `ServerToken` is our hash of the content (false for foreign tokens)."""
        return self.server_token == server_token(self.type, self.identifier, self.payload)

    @property
    def manifest_item(self) -> ManifestItem:
        return ManifestItem(self.category, self.identifier, self.server_token)

    def to_json(self) -> dict[str, Any]:
        """The declaration exactly in Apple's shape (a fresh copy, safe to mutate)."""
        return {
            "Type": self.type,
            "Identifier": self.identifier,
            "ServerToken": self.server_token,
            "Payload": copy.deepcopy(self.payload),
        }


def _describe(exc: ValidationError, what: str) -> str:
    """One line per problem, e.g. "declaration Identifier: must not be empty"."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{what} {where}: {message}")
    return "; ".join(problems)
