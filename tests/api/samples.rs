//! The Configure page's samples, run verbatim as an admin would paste them: cURL, Python and
//! Node.js, with the key written in (right after it was made) and read from the environment
//! (after a reload).

use crate::admin::Console;
use crate::helpers::spawn_app;
use crate::signing::{pre_text, run};

#[tokio::test]
#[ignore = "needs curl, python3 and node, like the browser tests need chromium"]
async fn every_sample_on_the_configure_page_gets_a_202_when_run() {
    let app = spawn_app().await;
    let admin = Console::set_up(&app).await;
    let agent = admin.create_agent("Line").await;
    let configure = admin.create_webhook(&agent).await;
    let first = admin.page(&configure).await;
    let key: String = first[first.find("pcwk_").expect("the key, shown once")..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let later = admin.page(&configure).await;
    assert!(!later.contains(&key), "the key is shown once");
    assert!(later.contains("Set <code>PRECALL_API_KEY</code>"));

    for (page, env) in [
        (&first, vec![]),
        (&later, vec![("PRECALL_API_KEY", key.as_str())]),
    ] {
        let shell = pre_text(page, "curl");
        let (ok, out) = run(
            "sh",
            &["-c", &format!("{shell} -s -w ' %{{http_code}}'")],
            &env,
        )
        .await;
        assert!(ok && out.ends_with(" 202"), "{shell}\n{out}");
        let python = pre_text(page, "python-sample");
        let (ok, out) = run("python3", &["-c", &python], &env).await;
        assert!(ok && out.starts_with("202 "), "{python}\n{out}");
        let node = pre_text(page, "node-sample");
        let (ok, out) = run("node", &["-e", &node], &env).await;
        assert!(ok && out.starts_with("202 "), "{node}\n{out}");
    }
    let deliveries = admin
        .page(&configure.replace("/configure", "/deliveries"))
        .await;
    assert!(deliveries.matches("+12125550123").count() >= 6);
}
