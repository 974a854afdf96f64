"""schemathesis hooks for .ci/schemathesis: the named rules no schema can express.

`positive_data_acceptance` fails when a request that conforms to openapi.yaml is refused.
A few of the server's rules depend on state or on the date, which a schema cannot
describe, so a conforming request can rightly be refused by them. This check runs the
built-in `positive_data_acceptance` on every response except a refusal whose every
reason is one of these (and nothing else):

- `personal.birth_date` / `age_out_of_range`: the age window (13 to 130 years) is
  relative to today; a schema can only state a fixed set of dates.
- `business.billing_address.{line1,city,country}` / `required`: an address must be
  complete after merging the patch into the stored one; whether a key may be omitted
  depends on the address already stored.
- `409` (e-mail taken): uniqueness among all accounts is a property of the database
  (schemathesis already counts `409` as acceptable; it is listed here to be complete).
- `412` (`If-Match` names another state): whether a tag is current depends on the stored
  profile; the schema can only say which texts are entity tags.

Run with `--checks all --exclude-checks positive_data_acceptance`: this check replaces
the built-in one (and calls it for everything else).
"""

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

# (field, code) pairs of a 422 that no schema can rule out, with why.
STATEFUL_RULES = {
    ("personal.birth_date", "age_out_of_range"): "the age window is relative to today",
    ("business.billing_address.line1", "required"): "address complete after merging",
    ("business.billing_address.city", "required"): "address complete after merging",
    ("business.billing_address.country", "required"): "address complete after merging",
}
# Statuses a conforming request may get from stored state: 409 e-mail taken, 412 If-Match.
STATEFUL_STATUSES = {409, 412}


def _only_stateful_rules(response) -> bool:
    if response.status_code in STATEFUL_STATUSES:
        return True
    if response.status_code != 422:
        return False
    try:
        errors = response.json().get("errors") or []
    except Exception:  # not a problem document: let the built-in check judge it
        return False
    return bool(errors) and all((e.get("field"), e.get("code")) in STATEFUL_RULES for e in errors)


@schemathesis.check
def positive_data_acceptance_but_stateful_rules(ctx, response, case):
    """`positive_data_acceptance`, except refusals by the named stateful rules only."""
    if _only_stateful_rules(response):
        return None
    return positive_data_acceptance(ctx, response, case)
