"""The language the simulated API answers in: Dutch, as HostFact and WeFact do, unless a HostFact call asks.

HostFact takes its language from the ``language`` query parameter of the URL (``nl_NL`` or ``en_EN``), else
``nl_NL`` (Pro/config.php); WeFact answers in Dutch. The actions raise HostFact's en_EN texts
(Pro/includes/language/en_EN/en_EN.php); this module renders them in the language of the call. The nl_NL file
of HostFact 6.0.2 is encrypted: the Dutch below is from the API documentation's examples where it has one
(marked "doc"), and the simulator's own wording otherwise. factsync never decides on any of these texts but
HostFact's en_EN "API has concurrent calls", which it asks for in English.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import Final, Literal

from tasks.protocol import Dialect

Language = Literal["nl_NL", "en_EN"]
LANGUAGES: Final = ("nl_NL", "en_EN")

# (en_EN template, nl_NL template); "{}" stands for one value, filled in the same order.
_TEXTS: Final[tuple[tuple[str, str], ...]] = (
    ("Invalid identifier for invoice", "Ongeldige identifier voor factuur"),
    ("Invalid identifier for debtor", "Ongeldige identifier voor debiteur"),
    ("Invalid identifier for client", "Ongeldige identifier voor klant"),
    ("Unknown client number", "Onbekend debiteurnummer"),
    ("Invalid identifier for supplier", "Ongeldige identifier voor crediteur"),
    ("Invalid identifier for purchasing invoice", "Ongeldige identifier voor inkoopfactuur"),
    (
        "Identifier purchase invoice is invalid or already in use",
        "Identifier inkoopfactuur is ongeldig of al in gebruik",
    ),
    ("Invalid status", "Ongeldige status"),
    ("Invalid invoice number", "Ongeldig factuurnummer"),
    ("Invoice {} does not contain invoice lines", "Factuur {} bevat geen factuurregels"),
    (
        "Invoice number {} is already used by a different invoice",
        "Factuurnummer {} is al in gebruik bij een andere factuur",
    ),
    ("Only draft invoices can be deleted", "Alleen conceptfacturen kunnen worden verwijderd"),
    ("Invoice {} has been deleted", "Factuur {} is verwijderd"),
    (
        "Invoice {} cannot receive a partial payment, because it is still a draft invoice. "
        "Please send the invoice first.",
        "Factuur {} kan geen deelbetaling ontvangen, omdat het nog een conceptfactuur is. "
        "Verstuur de factuur eerst.",
    ),
    ("The invoice is already paid", "De factuur is al betaald"),
    ("Invoice {} cannot be marked as paid", "Factuur {} kan niet als betaald worden gemarkeerd"),
    # doc: HostFact "Deelbetaling bij factuur F0001 is verwerkt",
    # WeFact "Deelbetaling factuur F0001 is verwerkt".
    ("The partly payment of invoice {} has been processed.", "Deelbetaling bij factuur {} is verwerkt"),
    ("Invoice {} has been paid.", "Factuur {} is betaald."),
    ("Invoice is not marked as paid", "Factuur is niet als betaald gemarkeerd"),
    ("Payment undone for invoice {}.", "Betaling ongedaan gemaakt voor factuur {}."),
    (
        "Failed to create a credit invoice for {}. Invoice has status cancelled",
        "Aanmaken creditfactuur voor {} mislukt. Factuur heeft de status vervallen",
    ),
    ("It is not possible to credit draft invoice {}", "Het is niet mogelijk conceptfactuur {} te crediteren"),
    # doc (WeFact): "Creditfactuur F2024-0002 is aangemaakt", "Factuur F2024-0001 is gecrediteerd."
    ("Invoice {} has been created successfully", "Creditfactuur {} is aangemaakt"),
    ("Invoice {} is credited and set on status 'cancelled'", "Factuur {} is gecrediteerd."),
    ("Invoice {} has been sent by e-mail", "Factuur {} is per e-mail verstuurd"),
    (
        "It is not possible to send a {} for invoice {}",
        "Het is niet mogelijk een {} te versturen voor factuur {}",
    ),
    (
        "It is not possible to send a payment reminder for invoice {}, "
        "because the payment process is paused.",
        "Het is niet mogelijk een herinnering te versturen voor factuur {}, omdat het betaalproces is "
        "gepauzeerd.",
    ),
    ("The {} for invoice {} has been sent by e-mail", "De {} voor factuur {} is per e-mail verstuurd"),
    ("Invalid type for '{}'", "Ongeldig type voor '{}'"),
    # doc (WeFact invoiceline add): "Er zijn 1 factuurregels toegevoegd".
    ("Successfully added {} invoice lines", "Er zijn {} factuurregels toegevoegd"),
    ("Successfully deleted {} invoice lines", "Er zijn {} factuurregels verwijderd"),
    ("At least 1 identifier has to be entered", "Er moet minimaal 1 identifier worden opgegeven"),
    (
        "It is not possible to delete invoice lines of another invoice",
        "Het is niet mogelijk factuurregels van een andere factuur te verwijderen",
    ),
    ("No invoice line found with identifier '{}'", "Geen factuurregel gevonden met identifier '{}'"),
    (
        "It is not possible to delete all invoice lines of an invoice. "
        "An invoice needs to contain at least one invoice line.",
        "Het is niet mogelijk alle factuurregels van een factuur te verwijderen. "
        "Een factuur moet minimaal een factuurregel bevatten.",
    ),
    (
        "Invoice line {} cannot be edited, because it belongs to invoice {}",
        "Factuurregel {} kan niet worden gewijzigd, omdat deze bij factuur {} hoort",
    ),
    (
        "Invoice line {} cannot be edited, because this invoice line belongs to purchasing invoice '{}'.",
        "Factuurregel {} kan niet worden gewijzigd, omdat deze factuurregel bij inkoopfactuur '{}' hoort.",
    ),
    ("Invalid TaxCode '{}'", "Ongeldige btw-code '{}'"),
    (
        "The tax percentage of an invoice line should lie between 0% and 100%.",
        "Het btw-percentage van een factuurregel moet tussen 0% en 100% liggen.",
    ),
    (
        "The discount percentage of an invoice line needs to be between 0% and 100%",
        "Het kortingspercentage van een factuurregel moet tussen 0% en 100% liggen",
    ),
    (
        "Please enter the invoice number of the supplier (InvoiceCode)",
        "Vul het factuurnummer van de crediteur in (InvoiceCode)",
    ),
    (
        "Invoice no. {} is already in use for another purchase invoice.",
        "Factuurnr. {} is al in gebruik voor een andere inkoopfactuur.",
    ),
    ("Purchasing invoice {} has been deleted", "Inkoopfactuur {} is verwijderd"),
    ("Purchasing invoice is already paid", "Inkoopfactuur is al betaald"),
    (
        "The partly payment of purchasing invoice {} is higher than the outstanding amount",
        "De deelbetaling van inkoopfactuur {} is hoger dan het openstaande bedrag",
    ),
    (
        "The partly payment of purchasing invoice {} has been processed.",
        "Deelbetaling bij inkoopfactuur {} is verwerkt",
    ),
    ("Purchasing invoice {} is marked as paid", "Inkoopfactuur {} is als betaald gemarkeerd"),
    ("Client number {} is already in use", "Debiteurnummer {} is al in gebruik"),
    ("Supplier number {} is already in use", "Crediteurnummer {} is al in gebruik"),
    (
        "API has concurrent calls, but the queue was not able to fix them in {} seconds.",
        "API heeft gelijktijdige verzoeken, maar de wachtrij kon ze niet binnen {} seconden afhandelen.",
    ),
    (
        "Een Identifier is niet toegestaan voor deze actie",
        "Een Identifier is niet toegestaan voor deze actie",
    ),
)

# hostfactapi.class.php writes these itself, in English whatever the language (login, routing, filters).
_ALWAYS_ENGLISH: Final = (
    re.compile(r"No api_key provided|API access has been disabled|API key is invalid"),
    re.compile(r"IP .* has no access to API"),
    re.compile(r"Invalid (controller|action)"),
    re.compile(r"Invalid (filter|date\(s\)|datetime\(s\)) .*"),
)


def _compile(texts: Iterable[tuple[str, str]]) -> tuple[tuple[re.Pattern[str], str], ...]:
    compiled = []
    for english, dutch in texts:
        parts = [re.escape(part) for part in english.split("{}")]
        compiled.append((re.compile("(.*?)".join(parts)), dutch))
    return tuple(compiled)


@cache
def _patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    return _compile(_TEXTS)


def language_of(dialect: Dialect, requested: str | None) -> Language:
    """The language a call is answered in: HostFact honours ``?language=``, WeFact answers in Dutch."""
    if dialect == "hostfact" and requested == "en_EN":
        return "en_EN"
    return "nl_NL"


def has_translation(message: str) -> bool:
    """Whether ``message`` (an en_EN text) has a Dutch form, or is one HostFact prints in English anyway."""
    return any(p.fullmatch(message) for p in _ALWAYS_ENGLISH) or any(
        pattern.fullmatch(message) for pattern, _ in _patterns()
    )


# Where WeFact's Dutch differs from HostFact's (documentation examples).
_WEFACT_TEXTS: Final[tuple[tuple[str, str], ...]] = (
    # doc (WeFact invoice partpayment): "Deelbetaling factuur F0001 is verwerkt", without HostFact's "bij".
    ("The partly payment of invoice {} has been processed.", "Deelbetaling factuur {} is verwerkt"),
)


@cache
def _wefact_patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    return _compile(_WEFACT_TEXTS)


def translate(message: str, language: Language, dialect: Dialect = "hostfact") -> str:
    """``message`` (an en_EN text the actions raise) as the API prints it in ``language``."""
    if language == "en_EN" or any(p.fullmatch(message) for p in _ALWAYS_ENGLISH):
        return message
    patterns = _patterns() if dialect == "hostfact" else _wefact_patterns() + _patterns()
    for pattern, dutch in patterns:
        match = pattern.fullmatch(message)
        if match is not None:
            return dutch.format(*match.groups())
    return message


def translate_all(messages: Iterable[str], language: Language, dialect: Dialect = "hostfact") -> list[str]:
    return [translate(message, language, dialect) for message in messages]
