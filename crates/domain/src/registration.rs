//! Self-service registration: `name`, `last_name` and `email`, each checked and
//! reported on its own so a client learns about every bad field at once.

use crate::validation::ValidationErrors;
use serde_json::Value;

/// Longest `name` / `last_name` (as Django's user model allows: 150 characters).
pub const MAX_NAME_LEN: usize = 150;
/// Longest email address (RFC 5321: 254 characters in a path, 64 in the local part).
pub const MAX_EMAIL_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;
const MAX_LABEL_LEN: usize = 63;

/// A valid registration, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub last_name: String,
    /// As given (trimmed); uniqueness is case-insensitive, in the store.
    pub email: String,
}

impl Registration {
    /// Validates a JSON object (form fields arrive as one too, every value a string). Unknown
    /// keys are ignored, as form posts often carry extra fields; `null` counts as absent.
    pub fn from_json(body: &Value) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(obj) = body.as_object() else {
            errors.push("body", "must be a JSON object");
            return Err(errors);
        };
        let name = text(&mut errors, obj, "name").and_then(|v| check_name(&mut errors, "name", v));
        let last_name = text(&mut errors, obj, "last_name")
            .and_then(|v| check_name(&mut errors, "last_name", v));
        let email = text(&mut errors, obj, "email").and_then(|v| match email_problem(&v) {
            None => Some(v),
            Some(problem) => {
                errors.push("email", problem);
                None
            }
        });
        match (name, last_name, email) {
            (Some(name), Some(last_name), Some(email)) if errors.is_empty() => Ok(Registration {
                name,
                last_name,
                email,
            }),
            _ => Err(errors),
        }
    }
}

/// The trimmed string value of `field`, or `None` with its error recorded.
fn text(
    errors: &mut ValidationErrors,
    obj: &serde_json::Map<String, Value>,
    field: &str,
) -> Option<String> {
    match obj.get(field).filter(|v| !v.is_null()) {
        None => {
            errors.push(field, "is required");
            None
        }
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        Some(_) => {
            errors.push(field, "must be a string");
            None
        }
    }
}

fn check_name(errors: &mut ValidationErrors, field: &str, value: String) -> Option<String> {
    if value.is_empty() {
        errors.push(field, "must not be empty");
    } else if value.chars().count() > MAX_NAME_LEN {
        errors.push(
            field,
            format!("must have at most {MAX_NAME_LEN} characters"),
        );
    } else if value.chars().any(char::is_control) {
        errors.push(field, "must not contain control characters");
    } else {
        return Some(value);
    }
    None
}

/// Why `email` is not an address we accept, or `None` when it is. The rules are the usual
/// practical subset of RFC 5322: an ASCII dot-atom local part, `@`, and a domain of at least two
/// DNS labels whose last one (the TLD) is alphabetic or an IDN (`xn--`) label.
pub fn email_problem(email: &str) -> Option<&'static str> {
    if email.is_empty() {
        return Some("must not be empty");
    }
    if email.len() > MAX_EMAIL_LEN {
        return Some("must have at most 254 characters");
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Some("must be an email address (name@domain)");
    };
    let local_ok = !local.is_empty()
        && local.len() <= MAX_LOCAL_LEN
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c))
        });
    if !local_ok {
        return Some("has an invalid part before the @");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let labels_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let tld_ok = labels.last().is_some_and(|tld| {
        tld.len() >= 2
            && (tld.chars().all(|c| c.is_ascii_alphabetic())
                || tld.to_ascii_lowercase().starts_with("xn--"))
    });
    if !labels_ok || !tld_ok {
        return Some("has an invalid domain");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errors: &ValidationErrors) -> Vec<&str> {
        errors.0.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_good_registration_is_trimmed() {
        let r = Registration::from_json(&json!({
            "name": " Dave ", "last_name": "Mustaine", "email": " Dave@Example.com ", "extra": 1
        }))
        .unwrap();
        assert_eq!(
            r,
            Registration {
                name: "Dave".into(),
                last_name: "Mustaine".into(),
                email: "Dave@Example.com".into(),
            }
        );
    }

    #[test]
    fn every_bad_field_is_reported() {
        let err = Registration::from_json(&json!({"name": "", "email": "nope"})).unwrap_err();
        assert_eq!(fields(&err), ["name", "last_name", "email"]);
        let err =
            Registration::from_json(&json!({"name": 5, "last_name": null, "email": ["a@b.co"]}))
                .unwrap_err();
        assert_eq!(fields(&err), ["name", "last_name", "email"]);
        assert_eq!(err.0[0].message, "must be a string");
        assert_eq!(err.0[1].message, "is required");
        let err = Registration::from_json(&json!([1])).unwrap_err();
        assert_eq!(fields(&err), ["body"]);
    }

    #[test]
    fn names_are_bounded_and_printable() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for (name, ok) in [
            ("Zoë", true),
            (&"é".repeat(MAX_NAME_LEN) as &str, true),
            (&long, false),
            ("a\nb", false),
            ("   ", false),
        ] {
            let r = Registration::from_json(
                &json!({"name": name, "last_name": "L", "email": "a@b.co"}),
            );
            assert_eq!(r.is_ok(), ok, "{name:?}");
        }
    }

    #[test]
    fn emails() {
        for good in [
            "user@example.com",
            "examplemail@email.com",
            "first.last+tag@sub.example.co.uk",
            "o'hara@example.org",
            "x@xn--bcher-kva.example",
            "a@b.xn--p1ai",
        ] {
            assert_eq!(email_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "plain",
            "@example.com",
            "user@",
            "user@localhost",
            "user@example.c",
            "user@example.123",
            "us er@example.com",
            "user@exa mple.com",
            ".user@example.com",
            "user.@example.com",
            "us..er@example.com",
            "user@-example.com",
            "user@example..com",
            "üser@example.com",
            "user@example.com\n",
        ] {
            assert!(email_problem(bad).is_some(), "{bad:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(email_problem(&long_local).is_some());
        let long = format!("a@{}.com", "b.".repeat(130));
        assert!(email_problem(&long).is_some());
    }
}
