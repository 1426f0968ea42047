//! TwiML (https://www.twilio.com/docs/voice/twiml) for a call that Precall runs itself:
//! Greeting and Talk are `<Say>`, a Collect is `<Gather input="speech dtmf">` whose action
//! posts the answer back, Transfer Call is `<Dial>`, End Call is `<Say>` and `<Hangup>`, a
//! pre-call End Call is `<Reject>`. Written as Twilio's own library writes it.

use crate::domain::runtime::{Question, Step};

/// A TwiML document being written.
#[derive(Default)]
pub struct Twiml {
    body: String,
}

/// Escapes text and attribute values as XML (and Twilio's library) does.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

impl Twiml {
    pub fn say(&mut self, text: &str) -> &mut Self {
        if !text.trim().is_empty() {
            self.body.push_str(&format!("<Say>{}</Say>", escape(text)));
        }
        self
    }

    /// Asks by voice or keypad; the answer is posted to `action`. When the caller says
    /// nothing, Twilio goes on to the next verb: a `<Redirect>` to `on_silence`.
    pub fn gather(&mut self, prompt: &str, action: &str, on_silence: &str) -> &mut Self {
        self.body.push_str(&format!(
            "<Gather action=\"{}\" input=\"speech dtmf\" method=\"POST\">",
            escape(action)
        ));
        self.say(prompt);
        self.body.push_str("</Gather>");
        self.body.push_str(&format!(
            "<Redirect method=\"POST\">{}</Redirect>",
            escape(on_silence)
        ));
        self
    }

    pub fn dial(&mut self, number: &str) -> &mut Self {
        self.body
            .push_str(&format!("<Dial>{}</Dial>", escape(number)));
        self
    }

    pub fn hangup(&mut self) -> &mut Self {
        self.body.push_str("<Hangup />");
        self
    }

    pub fn reject(&mut self) -> &mut Self {
        self.body.push_str("<Reject />");
        self
    }

    pub fn finish(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{}</Response>",
            self.body
        )
    }
}

/// One turn of a call as TwiML: what its steps say, then the question (gathered, its answer
/// posted to `action`), a transfer, or the end. A pre-call End Call rejects the call.
pub fn turn(steps: &[Step], question: Option<&Question>, action: &str, on_silence: &str) -> String {
    let mut t = Twiml::default();
    let refused = steps
        .iter()
        .any(|s| s.kind == "precall_end_call" && s.case.is_none() && s.skipped.is_none());
    if refused {
        return t.reject().finish();
    }
    let mut ended = false;
    for s in steps {
        let said = s.said.as_deref().unwrap_or_default();
        match s.kind.as_str() {
            "greeting" | "start" | "talk" => {
                t.say(said);
            }
            "transfer_call" => {
                t.say(said);
                match &s.destination {
                    Some(number) => {
                        t.dial(number);
                    }
                    None => {
                        t.hangup();
                    }
                }
                ended = true;
            }
            "end_call" => {
                t.say(said).hangup();
                ended = true;
            }
            "error" => {
                t.hangup();
                ended = true;
            }
            _ => {}
        }
    }
    match question {
        Some(q) if !ended => {
            t.gather(&q.prompt, action, on_silence);
        }
        None if !ended => {
            t.hangup();
        }
        _ => {}
    }
    t.finish()
}

/// What a caller's spoken answer may mean, most literal first. Twilio writes speech as a
/// sentence ("1234.", "Four.", "Yes."), and a Collect's variable may want a number or a
/// boolean: the answer as said, then without its closing punctuation, then as a number
/// ("1,234" → "1234", a number word → its digits) or a yes or a no (`true`, `false`). The
/// first that the variable takes is its answer: text is kept as said.
pub fn speech_readings(said: &str) -> Vec<String> {
    let base = said
        .trim()
        .trim_end_matches(|c: char| c.is_whitespace() || ".!?,;:".contains(c))
        .trim_start();
    let mut readings = vec![said.to_owned(), base.to_owned()];
    let grouped = base.replace(',', "");
    if grouped != base
        && grouped.parse::<f64>().is_ok()
        && base.split(',').skip(1).all(|g| {
            g.len() >= 3
                && g.as_bytes()[..3].iter().all(u8::is_ascii_digit)
                && (g.len() == 3 || g.as_bytes()[3] == b'.')
        })
    {
        readings.push(grouped);
    }
    const WORDS: [&str; 21] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    let lower = base.to_lowercase();
    if let Some(n) = WORDS.iter().position(|w| *w == lower) {
        readings.push(n.to_string());
    }
    match lower.as_str() {
        "yes" | "yeah" | "yep" | "correct" | "right" | "true" => readings.push("true".into()),
        "no" | "nope" | "false" => readings.push("false".into()),
        _ => {}
    }
    readings.dedup();
    readings
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_spoken_answer_is_read_as_said_then_as_a_number_or_a_yes_or_no() {
        use super::speech_readings as r;
        assert_eq!(r("1234."), ["1234.", "1234"]);
        assert_eq!(r(" 1,234. "), [" 1,234. ", "1,234", "1234"]);
        assert_eq!(r("Four."), ["Four.", "Four", "4"]);
        assert_eq!(r("Yes!"), ["Yes!", "Yes", "true"]);
        assert_eq!(r("no"), ["no", "false"]);
        assert_eq!(r("I need help."), ["I need help.", "I need help"]);
        // Commas that do not group thousands are the caller's words.
        assert_eq!(r("1,2"), ["1,2"]);
        assert_eq!(r("1,2345"), ["1,2345"]);
        assert_eq!(r("12,345.5"), ["12,345.5", "12345.5"]);
        assert_eq!(r("red, green"), ["red, green"]);
    }
    use super::*;

    fn step(kind: &str, said: Option<&str>) -> Step {
        Step {
            kind: kind.into(),
            said: said.map(Into::into),
            ..Step::default()
        }
    }

    #[test]
    fn says_then_gathers_with_the_answer_posted_back() {
        let q = Question {
            flow_key: "main".into(),
            block_key: "b2".into(),
            variable: "reason".into(),
            prompt: "Why do you call?".into(),
        };
        let x = turn(
            &[
                step("greeting", Some("Hi <Ada> & co")),
                step("collect", Some("Why do you call?")),
            ],
            Some(&q),
            "http://h/connect/s?call=c&turn=1",
            "http://h/connect/s?call=c&silence=1",
        );
        assert_eq!(
            x,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Hi &lt;Ada&gt; &amp; co</Say>\
             <Gather action=\"http://h/connect/s?call=c&amp;turn=1\" input=\"speech dtmf\" method=\"POST\">\
             <Say>Why do you call?</Say></Gather><Redirect method=\"POST\">http://h/connect/s?call=c&amp;silence=1</Redirect></Response>"
        );
    }

    #[test]
    fn ends_transfers_and_rejects() {
        let mut transfer = step("transfer_call", Some("Connecting you."));
        transfer.destination = Some("+15550100".into());
        assert!(
            turn(&[transfer], None, "a", "b")
                .ends_with("<Say>Connecting you.</Say><Dial>+15550100</Dial></Response>")
        );
        assert!(
            turn(&[step("end_call", Some("Bye."))], None, "a", "b")
                .ends_with("<Say>Bye.</Say><Hangup /></Response>")
        );
        let refuse = step("precall_end_call", Some("No."));
        assert!(turn(&[refuse], None, "a", "b").ends_with("<Response><Reject /></Response>"));
    }
}
