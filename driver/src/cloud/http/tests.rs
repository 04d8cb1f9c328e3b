use super::*;

#[test]
fn the_token_never_shows_in_debug_output() {
    let cloud = HttpCloud::new(
        "http://127.0.0.1:1",
        Token("s3cr3t-t0ken".into()),
        Duration::from_secs(1),
    )
    .unwrap();
    let text = format!("{cloud:?} {:?}", Token("s3cr3t-t0ken".into()));
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
}

#[test]
fn path_segments_from_requests_are_escaped() {
    let cloud = HttpCloud::new(
        "http://h:1/prefix/",
        Token("t".into()),
        Duration::from_secs(1),
    )
    .unwrap();
    let url = cloud.url(
        &["v2", "volumes", "../droplets/1?x=y"],
        &[("name", "a b&c")],
    );
    assert_eq!(
        url.as_str(),
        "http://h:1/prefix/v2/volumes/..%2Fdroplets%2F1%3Fx=y?name=a+b%26c"
    );
}

#[test]
fn backoff_grows_with_jitter_and_is_capped() {
    for attempt in 1..8 {
        let d = backoff_delay(attempt);
        let full = BASE_BACKOFF
            .saturating_mul(1 << (attempt - 1))
            .min(MAX_BACKOFF);
        assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
    }
    assert!(backoff_delay(30) <= MAX_BACKOFF);
}

#[test]
fn error_bodies_give_their_message() {
    assert_eq!(
        error_message(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"id":"x","message":"Attachment not found"}"#
        ),
        "Attachment not found"
    );
    assert_eq!(
        error_message(StatusCode::BAD_GATEWAY, b"<html>"),
        "Bad Gateway"
    );
}
