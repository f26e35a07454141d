//! Page furniture shared by every page: the layout's fields, the error summary, times, and the
//! small pages (not found, form expired, throttled, done).

use askama::Template;
use askama_web::WebTemplate;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use carevault_domain::people::{Role, SessionLevel, SessionView, SignInError};

pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
}

/// What the layout (header, navigation, sign-out button) needs.
pub struct Layout {
    pub title: String,
    pub signed_in: bool,
    pub person_name: String,
    pub csrf: String,
    pub nav: Vec<NavLink>,
}

/// One problem with one field: `field` is the id of the input the summary links to.
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The problems with a submitted form, shown in the error summary and beside each field.
#[derive(Default)]
pub struct Errors {
    pub list: Vec<FieldError>,
}

impl Errors {
    pub fn none() -> Errors {
        Errors::default()
    }

    pub fn one(field: &str, message: impl Into<String>) -> Errors {
        Errors {
            list: vec![FieldError {
                field: field.to_owned(),
                message: message.into(),
            }],
        }
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.list.push(FieldError {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The message for one field, if it has one.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.list
            .iter()
            .find(|error| error.field == field)
            .map(|error| error.message.as_str())
    }

    pub fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }
}

/// The layout for a page. Titles are unique per page; "Error: " leads when the form had
/// problems (as the NHS service manual asks).
pub fn layout(title: &str, view: Option<&SessionView>, errors: &Errors) -> Layout {
    let prefix = if errors.is_empty() { "" } else { "Error: " };
    let signed_in = view.is_some_and(|view| view.session.level == SessionLevel::Mfa);
    Layout {
        title: format!("{prefix}{title} – carevault"),
        signed_in,
        person_name: view.map_or(String::new(), |view| view.person.display_name.clone()),
        csrf: view.map_or(String::new(), |view| view.session.csrf.clone()),
        nav: match view {
            Some(view) if signed_in => navigation(&view.person.roles),
            _ => Vec::new(),
        },
    }
}

fn navigation(roles: &[Role]) -> Vec<NavLink> {
    let mut links = Vec::new();
    if roles
        .iter()
        .any(|role| matches!(role, Role::Clinician | Role::Carer))
    {
        links.push(NavLink {
            href: "/",
            label: "Home",
        });
        links.push(NavLink {
            href: "/break-glass",
            label: "Break-glass access",
        });
    }
    if roles.contains(&Role::TenantAdmin) {
        links.push(NavLink {
            href: "/admin/people",
            label: "People",
        });
        links.push(NavLink {
            href: "/admin/grants",
            label: "Supplier access",
        });
    }
    if roles.contains(&Role::PlatformOperator) {
        links.push(NavLink {
            href: "/operator/grants",
            label: "Tenant access",
        });
    }
    links.push(NavLink {
        href: "/account",
        label: "Your account",
    });
    links
}

/// A time for people: `14:05 UTC, 3 January 2027`.
pub fn when(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[hour]:[minute] UTC, [day padding:none] [month repr:long] [year]"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_else(|| "an unknown time".to_owned())
}

/// "in 3 minutes", "in 40 seconds".
pub fn wait_text(ms: i64) -> String {
    let seconds = (ms + 999) / 1000;
    if seconds > 90 {
        format!("{} minutes", (seconds + 59) / 60)
    } else {
        format!("{} seconds", seconds.max(1))
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub page: Layout,
    pub errors: Errors,
    pub heading: String,
    pub paragraphs: Vec<String>,
    pub link: Option<(String, String)>,
}

pub fn message(
    status: StatusCode,
    view: Option<&SessionView>,
    heading: &str,
    paragraphs: &[&str],
    link: Option<(&str, &str)>,
) -> Response {
    let page = MessagePage {
        page: layout(heading, view, &Errors::none()),
        errors: Errors::none(),
        heading: heading.to_owned(),
        paragraphs: paragraphs.iter().map(|p| (*p).to_owned()).collect(),
        link: link.map(|(href, label)| (href.to_owned(), label.to_owned())),
    };
    (status, page).into_response()
}

/// What a person sees for a page that does not exist or is not theirs: the same either way.
pub fn not_found(view: Option<&SessionView>) -> Response {
    message(
        StatusCode::NOT_FOUND,
        view,
        "Page not found",
        &["If you typed the web address, check it is correct."],
        Some(("/", "Go to the start page")),
    )
}

pub fn form_expired() -> Response {
    message(
        StatusCode::FORBIDDEN,
        None,
        "This form has expired",
        &[
            "For your security, forms stop working after a while or after you sign in again. Go back, reload the page and try again.",
        ],
        Some(("/", "Go to the start page")),
    )
}

pub fn throttled(view: Option<&SessionView>, wait_ms: i64) -> Response {
    let text = format!(
        "There have been too many attempts to sign in. Try again in {}.",
        wait_text(wait_ms)
    );
    message(
        StatusCode::TOO_MANY_REQUESTS,
        view,
        "Too many attempts",
        &[text.as_str()],
        None,
    )
}

pub fn session_ended() -> Response {
    message(
        StatusCode::UNAUTHORIZED,
        None,
        "Your session has ended",
        &["Sign in again to carry on."],
        Some(("/signin", "Sign in")),
    )
}

/// A domain error that is not a problem with a field: the page for it.
pub fn failure(view: Option<&SessionView>, error: &SignInError) -> Response {
    match error {
        SignInError::Throttled(wait) => throttled(view, *wait),
        SignInError::SessionEnded => session_ended(),
        SignInError::Invalid(text) => message(
            StatusCode::BAD_REQUEST,
            view,
            "There is a problem",
            &[text.as_str()],
            Some(("/", "Go to the start page")),
        ),
        SignInError::AuditUnavailable | SignInError::Internal(_) => {
            tracing::error!(%error, "a web page failed");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                view,
                "Sorry, there is a problem with the service",
                &["Try again later."],
                None,
            )
        }
        other => message(
            StatusCode::BAD_REQUEST,
            view,
            "There is a problem",
            &[other.to_string().as_str()],
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_waits_read_naturally() {
        assert_eq!(when(0), "00:00 UTC, 1 January 1970");
        assert_eq!(wait_text(30_000), "30 seconds");
        assert_eq!(wait_text(600_000), "10 minutes");
    }

    #[test]
    fn error_titles_lead_with_error() {
        let errors = Errors::one("email", "Enter your email address");
        assert!(
            layout("Sign in", None, &errors)
                .title
                .starts_with("Error: Sign in")
        );
        assert_eq!(errors.get("email"), Some("Enter your email address"));
        assert!(!errors.has("password"));
    }
}
