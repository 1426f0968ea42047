//! The flow canvas through HTTP: the flow drawn on the server as an SVG graph (what a
//! browser without JavaScript shows), the console token its script presents to the
//! management API, and the layout that API gives any front end.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::{Console, EMAIL, location};
use crate::helpers::{TestApp, spawn_app};

fn example() -> Value {
    serde_json::from_str(include_str!("../../examples/lead-qualification.json")).unwrap()
}

/// The `data-token` of a flow page: the console token handed to its canvas script.
pub fn console_token(html: &str) -> String {
    let at = html.find(r#"data-token=""#).expect("a data-token") + r#"data-token=""#.len();
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

/// The occurrences of `needle` in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// The server-drawn graph of a page, from `<svg class="flow-graph"` to its `</svg>`.
fn graph(html: &str) -> &str {
    let start = html
        .find(r#"<svg class="flow-graph""#)
        .expect("an SVG graph");
    &html[start..start + html[start..].find("</svg>").unwrap()]
}

async fn send(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    etag: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .request(method, format!("{}/api/v1{path}", app.address))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(e) = etag {
        req = req.header("if-match", e);
    }
    req.send().await.unwrap()
}

/// A console with an agent whose draft is the lead-qualification example, saved through
/// the management API with the flow page's console token; returns (console, agent, token).
async fn lead_qualification(app: &TestApp) -> (Console, String, String) {
    let console = Console::set_up(app).await;
    let agent = console.create_agent("Leads").await;
    let page = console.page(&format!("/admin/agents/{agent}")).await;
    let first = page
        .split(&format!("/admin/agents/{agent}/flows/"))
        .nth(1)
        .map(|s| s[..s.find('"').unwrap()].to_owned())
        .expect("a link to the First Flow");
    let html = console
        .page(&format!("/admin/agents/{agent}/flows/{first}"))
        .await;
    let token = console_token(&html);
    assert!(token.starts_with("pcct_"), "{token}");
    let res = send(
        app,
        &token,
        Method::PUT,
        &format!("/agents/{agent}/draft"),
        Some(&example()),
        Some("*"),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    (console, agent, token)
}

#[tokio::test]
async fn a_flow_is_drawn_as_a_graph_with_its_branches_precall_lane_and_map_without_javascript() {
    let app = spawn_app().await;
    let (console, agent, _) = lead_qualification(&app).await;

    // The Sales flow: a box per block, each a link to its settings, an arrow per
    // connection, the Filter's outputs named on it.
    let html = console
        .page(&format!("/admin/agents/{agent}/flows/sales"))
        .await;
    let svg = graph(&html);
    for key in [
        "start",
        "ask_budget",
        "ask_interest",
        "qualify",
        "pitch_enterprise",
        "enterprise_sales",
        "pitch",
        "sales_desk",
    ] {
        assert!(
            svg.contains(&format!(r##"<a href="?block={key}#settings""##)),
            "{key} has a box linking to its settings"
        );
    }
    assert_eq!(count(svg, r#"class="edge""#), 7, "seven connections");
    assert!(svg.contains(">Large deal</text>") && svg.contains(">Else</text>"));
    assert!(
        svg.contains("class=\"node kind-collect"),
        "kinds are told apart"
    );
    assert!(svg.contains("Asks for budget"), "a block's one line");
    assert!(
        !svg.contains("Before the call"),
        "the lane is the First Flow's"
    );
    // The map of flows: both, the Transfer Flow arrow between them, this one current.
    let map = &html[html.find(r#"<svg class="flow-map""#).unwrap()..];
    assert!(map.contains(r#"class="map-node current""#));
    assert!(map.contains(">Sales qualification</text>") && map.contains("▶ Main"));
    assert_eq!(
        count(&map[..map.find("</svg>").unwrap()], r#"class="edge""#),
        1
    );

    // The First Flow: the pre-call lane above its Greeting, the Webhook with its wait.
    let html = console
        .page(&format!("/admin/agents/{agent}/flows/main"))
        .await;
    let svg = graph(&html);
    assert!(svg.contains("Before the call is answered"));
    assert!(svg.contains("CRM webhook") && svg.contains("Waits up to 2 s"));
    assert!(svg.contains("<title>then the call is answered</title>"));

    // A block no path reaches is dashed and listed; one left unfinished is marked.
    let mut doc = example();
    doc["flows"][1]["blocks"][3]["else"] = json!("enterprise_sales");
    doc["flows"][1]["blocks"][1]["variable"] = json!("");
    let token = console_token(&html);
    let res = send(
        &app,
        &token,
        Method::PUT,
        &format!("/agents/{agent}/draft"),
        Some(&doc),
        Some("*"),
    )
    .await;
    assert_eq!(res.status(), 200);
    let html = console
        .page(&format!("/admin/agents/{agent}/flows/sales"))
        .await;
    let svg = graph(&html);
    assert!(svg.contains(r#"class="node kind-talk unreachable" id="node-pitch""#));
    assert!(svg.contains(r#"class="node kind-collect unfinished" id="node-ask_budget""#));
    let listed = &html[html.find("Not reached from the entry").unwrap()..];
    assert!(listed.contains("#7 Talk"), "{}", &listed[..200]);

    // User text is escaped in the picture.
    let mut doc = example();
    doc["flows"][0]["blocks"][0]["message"] = json!("<script>alert(1)</script> & \"quotes\"");
    send(
        &app,
        &token,
        Method::PUT,
        &format!("/agents/{agent}/draft"),
        Some(&doc),
        Some("*"),
    )
    .await;
    let html = console
        .page(&format!("/admin/agents/{agent}/flows/main"))
        .await;
    assert!(!graph(&html).contains("<script>"));
    assert!(graph(&html).contains("&lt;script&gt;"));
}

#[tokio::test]
async fn the_console_token_acts_for_the_admin_only_while_the_session_lasts() {
    let app = spawn_app().await;
    let (console, agent, token) = lead_qualification(&app).await;
    // The same token on every page of the session, and only in the canvas's page.
    let again = console
        .page(&format!("/admin/agents/{agent}/flows/sales"))
        .await;
    assert_eq!(console_token(&again), token);
    assert!(
        !console
            .page(&format!("/admin/agents/{agent}"))
            .await
            .contains(&token)
    );
    // Saves made with it are the admin's own in the draft's record.
    let changes = send(
        &app,
        &token,
        Method::GET,
        &format!("/agents/{agent}/draft/changes"),
        None,
        None,
    )
    .await;
    assert_eq!(changes.status(), 200);
    let changes: Value = changes.json().await.unwrap();
    assert_eq!(changes["updatedBy"], EMAIL);
    assert!(changes["updatedAt"].as_str().unwrap().ends_with('Z'));
    // It is not one of the admin's API tokens.
    let tokens = console.page("/admin/api-tokens").await;
    assert!(!tokens.contains("console") && !tokens.contains("pcct_"));

    // A token made up, or one of the right shape but another secret, is refused.
    for bad in ["pcct_nope", &format!("{}x", &token[..token.len() - 1])] {
        let res = send(&app, bad, Method::GET, "/agents", None, None).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }

    // Another browser's session has its own; Sign out everywhere ends both.
    let other = Console::new(&app);
    let res = other
        .post(
            "/login",
            &[("email", EMAIL), ("password", crate::admin::PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{}", location(&res));
    let theirs = console_token(
        &other
            .page(&format!("/admin/agents/{agent}/flows/sales"))
            .await,
    );
    assert_ne!(theirs, token);
    let ok = send(&app, &theirs, Method::GET, "/agents", None, None).await;
    assert_eq!(ok.status(), 200);
    // Signing out ends this session's token, not the other's.
    let res = console
        .submit(&format!("/admin/agents/{agent}"), "/logout", &[])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = send(&app, &token, Method::GET, "/agents", None, None).await;
    let problem = crate::helpers::assert_problem(res, 401, "unauthorized").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("session ended"),
        "{problem}"
    );
    assert_eq!(
        send(&app, &theirs, Method::GET, "/agents", None, None)
            .await
            .status(),
        200
    );
    let admins = other.page("/admin/admins").await;
    let id = admins
        .split("/admin/admins/")
        .nth(1)
        .map(|s| s[..s.find('/').unwrap()].to_owned())
        .unwrap();
    let res = other
        .submit(
            "/admin/admins",
            &format!("/admin/admins/{id}/sessions/delete"),
            &[],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        send(&app, &theirs, Method::GET, "/agents", None, None)
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn the_draft_layout_places_every_block_without_overlap_and_keeps_saved_positions() {
    let app = spawn_app().await;
    let (_, agent, token) = lead_qualification(&app).await;
    let path = format!("/agents/{agent}/draft/layout");
    let res = send(&app, &token, Method::GET, &path, None, None).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("etag"));
    let layout: Value = res.json().await.unwrap();
    let sales = &layout["flows"][1];
    assert_eq!(sales["key"], "sales");
    let boxes = sales["blocks"].as_array().unwrap();
    assert_eq!(boxes.len(), 8);
    let at = |k: &str| boxes.iter().find(|b| b["key"] == k).unwrap().clone();
    let f = |b: &Value, k: &str| b[k].as_f64().unwrap();
    for (i, a) in boxes.iter().enumerate() {
        assert_eq!(a["saved"], false);
        for b in &boxes[i + 1..] {
            let apart = f(a, "x") + f(a, "width") <= f(b, "x")
                || f(b, "x") + f(b, "width") <= f(a, "x")
                || f(a, "y") + f(a, "height") <= f(b, "y")
                || f(b, "y") + f(b, "height") <= f(a, "y");
            assert!(apart, "{a} overlaps {b}");
        }
    }
    assert!(f(&at("ask_budget"), "y") > f(&at("start"), "y"));
    assert_eq!(layout["links"], json!([{"from": "main", "to": "sales"}]));
    assert_eq!(layout["map"].as_array().unwrap().len(), 2);

    // A position saved in the draft is the one given back, unless tidying.
    let mut doc = example();
    for (i, b) in doc["flows"][1]["blocks"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        b["position"] = json!({"x": 40 + i * 300, "y": 500});
    }
    let res = send(
        &app,
        &token,
        Method::PUT,
        &format!("/agents/{agent}/draft"),
        Some(&doc),
        Some("*"),
    )
    .await;
    assert_eq!(res.status(), 200);
    let kept: Value = send(&app, &token, Method::GET, &path, None, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kept["flows"][1]["blocks"][2]["x"], 640.0);
    assert_eq!(kept["flows"][1]["blocks"][2]["saved"], true);
    let tidy: Value = send(
        &app,
        &token,
        Method::GET,
        &format!("{path}?tidy=true"),
        None,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(tidy["flows"][1]["blocks"][2]["saved"], false);
    assert_ne!(tidy["flows"][1]["blocks"][2]["x"], 640.0);

    // What it does not know is refused and named.
    for q in ["tidy=maybe", "zoom=2"] {
        let res = send(
            &app,
            &token,
            Method::GET,
            &format!("{path}?{q}"),
            None,
            None,
        )
        .await;
        crate::helpers::assert_problem(res, 400, "bad-request").await;
    }
}
