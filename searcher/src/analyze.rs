//! `_analyze`: the tokens an analyzer makes of a text, with offsets and positions, for the
//! analyzers Floe indexes with (`standard` is what `text` fields use, `keyword` what
//! `keyword` fields use).

use serde_json::{json, Value};
use tantivy::tokenizer::{
    Language, LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer,
    WhitespaceTokenizer,
};

use floe_proto::mapping::FieldType;
use floe_proto::IndexMeta;

use crate::SearchError;

fn analyzer(name: &str) -> Result<TextAnalyzer, SearchError> {
    Ok(match name {
        "standard" | "default" | "simple" => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .build(),
        "whitespace" => TextAnalyzer::builder(WhitespaceTokenizer::default()).build(),
        "keyword" => TextAnalyzer::builder(RawTokenizer::default()).build(),
        "english" => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .filter(Stemmer::new(Language::English))
            .build(),
        other => {
            return Err(SearchError::IllegalArgument(format!(
                "failed to find global analyzer [{other}]: Floe has standard, simple, whitespace, keyword and english"
            )))
        }
    })
}

/// The `_analyze` answer for a body (`analyzer`, or `field` of `index`; `text`: one or a list).
pub fn analyze(body: &Value, index: Option<&IndexMeta>) -> Result<Value, SearchError> {
    let name = match (
        body.get("analyzer").and_then(Value::as_str),
        body.get("field").and_then(Value::as_str),
    ) {
        (Some(a), _) => a.to_string(),
        (None, Some(field)) => {
            let kind = index.and_then(|m| m.mappings.get(field)).map(|f| f.kind);
            match kind {
                Some(FieldType::Text) | None => "standard".into(),
                Some(_) => "keyword".into(),
            }
        }
        (None, None) => match body.get("tokenizer").and_then(Value::as_str) {
            Some("whitespace") => "whitespace".into(),
            Some("keyword") => "keyword".into(),
            _ => "standard".into(),
        },
    };
    let texts: Vec<String> = match body.get("text") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => return Err(SearchError::IllegalArgument("text is missing".into())),
    };
    let mut analyzer = analyzer(&name)?;
    let mut tokens = Vec::new();
    let (mut base_offset, mut base_position) = (0usize, 0usize);
    for text in &texts {
        let mut stream = analyzer.token_stream(text);
        let mut last = 0;
        while let Some(t) = stream.next() {
            last = t.position;
            tokens.push(json!({
                "token": t.text,
                "start_offset": base_offset + t.offset_from,
                "end_offset": base_offset + t.offset_to,
                "type": if name == "keyword" { "word" } else { "<ALPHANUM>" },
                "position": base_position + t.position,
            }));
        }
        // OpenSearch leaves a position gap of 100 between values.
        base_offset += text.len() + 1;
        base_position += last + 101;
    }
    Ok(json!({ "tokens": tokens }))
}
