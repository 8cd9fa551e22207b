//! (feature `ts`) The chat room's contract as TypeScript: `js/types/chat.ts` is what the
//! Rust types generate today, so the page's types cannot drift from the server's. After a
//! change to the contract, regenerate it with
//! `WEBWIRE_WRITE_TS=1 cargo test --features ts --test typescript`; CI type-checks the page's
//! use of it (`npm run typecheck` in `js/`).

#[allow(dead_code)]
#[path = "../examples/chatroom/contract.rs"]
mod contract;

const GENERATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/js/types/chat.ts");

#[test]
fn the_checked_in_typescript_is_what_the_contract_generates() {
    let rendered = contract::typescript().render();
    if std::env::var_os("WEBWIRE_WRITE_TS").is_some() {
        std::fs::write(GENERATED, &rendered).expect("writes js/types/chat.ts");
    }
    let checked_in = std::fs::read_to_string(GENERATED).unwrap_or_default();
    assert_eq!(
        checked_in, rendered,
        "js/types/chat.ts is stale: regenerate it (WEBWIRE_WRITE_TS=1 cargo test --features ts --test typescript)"
    );
    for expected in [
        "export type Login = { user: string, password: string, };",
        r#""login": { request: Login, reply: LoggedIn },"#,
        r#""say": { request: Say, reply: string | null },"#,
        r#""message": ChatMessage,"#,
    ] {
        assert!(rendered.contains(expected), "{expected} in:\n{rendered}");
    }
}
