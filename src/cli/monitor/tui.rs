//! The terminal UI of `gambiarra monitor` (feature `tui`): a tab per watched room, participant
//! cards (status dot, nickname, model, endpoint, specs when expanded, busy marker with the last
//! tok/s and time to first token), the activity log, and the keys in a footer. `draw` is a pure
//! function of [`App`], so the layout is tested on ratatui's test backend.

use std::process::ExitCode;
use std::time::Duration;

use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Tabs};
use tokio::sync::mpsc;

use super::feed::{RoomEvent, apply_event, follow, resolve_rooms};
use super::model::{Card, RoomView};
use crate::client::HubClient;
use crate::client::specs;
use crate::types::{ParticipantStatus, RoomSummary};

/// Keys, as shown in the footer.
pub(crate) const KEYS: &str = "q quit · tab next room · a add room · e expand · r refresh";

/// What the screen shows.
pub(crate) enum Mode {
    Watching,
    /// Choosing a room to add: the hub's rooms not watched yet.
    Picking {
        choices: Vec<RoomSummary>,
        selected: usize,
    },
}

pub(crate) struct App {
    pub(crate) hub_url: String,
    pub(crate) rooms: Vec<RoomView>,
    pub(crate) tab: usize,
    pub(crate) expanded: bool,
    pub(crate) mode: Mode,
    /// A short message in the footer (errors, hints).
    pub(crate) status: String,
}

impl App {
    pub(crate) fn new(hub_url: &str) -> Self {
        App {
            hub_url: hub_url.to_string(),
            rooms: Vec::new(),
            tab: 0,
            expanded: false,
            mode: Mode::Watching,
            status: String::new(),
        }
    }
}

fn status_style(s: ParticipantStatus) -> (Color, &'static str) {
    match s {
        ParticipantStatus::Online => (Color::Green, "online"),
        ParticipantStatus::Busy => (Color::Yellow, "busy"),
        ParticipantStatus::Offline => (Color::Red, "offline"),
    }
}

fn card_item(card: &Card, expanded: bool) -> ListItem<'static> {
    let status = card.status();
    let (color, word) = status_style(status);
    let mut first = vec![
        Span::styled("● ", Style::default().fg(color)),
        Span::styled(
            card.info.nickname.clone(),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!("  {}  ", super::model::models_line(&card.info))),
        Span::styled(
            card.info.endpoint.clone(),
            Style::default().fg(Color::DarkGray),
        ),
        Span::styled(format!("  {word}"), Style::default().fg(color)),
    ];
    if let Some(m) = &card.last {
        let marker = if status == ParticipantStatus::Busy {
            "  ⏳"
        } else {
            "  last:"
        };
        first.push(Span::raw(format!(
            "{marker} {:.1} tok/s · TTFT {} ms",
            m.tokens_per_second, m.latency_first_token_ms
        )));
    } else if status == ParticipantStatus::Busy {
        first.push(Span::raw("  ⏳ generating"));
    }
    let mut lines = vec![Line::from(first)];
    if expanded {
        if card.info.models.len() > 1 || card.info.models.iter().any(|m| !m.aliases.is_empty()) {
            for m in &card.info.models {
                let (dot, color, state) = match m.loaded {
                    Some(true) => ("●", Color::Green, "loaded"),
                    Some(false) => ("○", Color::DarkGray, "not loaded"),
                    None => ("·", Color::DarkGray, ""),
                };
                let mut spans = vec![
                    Span::styled(format!("    {dot} "), Style::default().fg(color)),
                    Span::raw(m.name.clone()),
                    Span::styled(format!("  {state}"), Style::default().fg(color)),
                ];
                if !m.aliases.is_empty() {
                    spans.push(Span::styled(
                        format!("  also: {}", m.aliases.join(", ")),
                        Style::default().fg(Color::DarkGray),
                    ));
                }
                lines.push(Line::from(spans));
            }
        }
        let spec_lines = specs::describe(&card.info.specs);
        if spec_lines.is_empty() {
            lines.push(Line::from("    (no specs shared)"));
        }
        lines.extend(
            spec_lines
                .into_iter()
                .map(|l| Line::from(format!("    {l}"))),
        );
    }
    ListItem::new(lines)
}

/// Render the whole screen.
pub(crate) fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(3),
            Constraint::Min(5),
            Constraint::Length(10),
            Constraint::Length(1),
        ])
        .split(area);
    let titles: Vec<Line> = app
        .rooms
        .iter()
        .map(|r| {
            let dot = if r.connected { "●" } else { "○" };
            Line::from(format!("{dot} {} {}", r.code, r.name))
        })
        .collect();
    let tabs = Tabs::new(titles)
        .select(app.tab.min(app.rooms.len().saturating_sub(1)))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" Gambiarra monitor · {} ", app.hub_url)),
        );
    frame.render_widget(tabs, rows[0]);

    match &app.mode {
        Mode::Picking { choices, selected } => {
            let items: Vec<ListItem> = if choices.is_empty() {
                vec![ListItem::new(
                    "No rooms available. (r to refresh, Esc to go back)",
                )]
            } else {
                choices
                    .iter()
                    .map(|r| {
                        ListItem::new(format!(
                            "{}  {}  ({} participants)",
                            r.code, r.name, r.participant_count
                        ))
                    })
                    .collect()
            };
            let list = List::new(items)
                .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(" Pick a room (↑/↓, Enter) "),
                );
            let mut state = ListState::default();
            if !choices.is_empty() {
                state.select(Some(*selected));
            }
            frame.render_stateful_widget(list, rows[1], &mut state);
        }
        Mode::Watching => {
            let room = app.rooms.get(app.tab);
            let items: Vec<ListItem> = match room {
                None => vec![ListItem::new("No room watched. Press a to add one.")],
                Some(r) if r.cards.is_empty() => {
                    vec![ListItem::new(
                        "No participants yet. (gambiarra join --code … --model …)",
                    )]
                }
                Some(r) => r.cards.iter().map(|c| card_item(c, app.expanded)).collect(),
            };
            let title = room.map_or_else(
                || " Participants ".to_string(),
                |r| match r.queued {
                    0 => format!(" Participants · {} ", r.cards.len()),
                    q => format!(" Participants · {} · {q} queued ", r.cards.len()),
                },
            );
            frame.render_widget(
                List::new(items).block(Block::default().borders(Borders::ALL).title(title)),
                rows[1],
            );
        }
    }

    let log_height = rows[2].height.saturating_sub(2) as usize;
    let log: Vec<Line> = app
        .rooms
        .get(app.tab)
        .map(|r| {
            let skip = r.log.len().saturating_sub(log_height);
            r.log
                .iter()
                .skip(skip)
                .map(|l| Line::from(l.clone()))
                .collect()
        })
        .unwrap_or_default();
    frame.render_widget(
        Paragraph::new(log).block(Block::default().borders(Borders::ALL).title(" Activity ")),
        rows[2],
    );
    let footer = if app.status.is_empty() {
        KEYS.to_string()
    } else {
        format!("{KEYS}   {}", app.status)
    };
    frame.render_widget(
        Paragraph::new(footer).style(Style::default().fg(Color::DarkGray)),
        rows[3],
    );
}

/// What a key asks for.
enum Action {
    None,
    Quit,
    Refresh,
    OpenPicker,
    Add(RoomSummary),
}

fn on_key(app: &mut App, key: KeyEvent) -> Action {
    if key.kind != KeyEventKind::Press {
        return Action::None;
    }
    if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
        return Action::Quit;
    }
    match &mut app.mode {
        Mode::Picking { choices, selected } => match key.code {
            KeyCode::Up => *selected = selected.saturating_sub(1),
            KeyCode::Down if *selected + 1 < choices.len() => *selected += 1,
            KeyCode::Enter if !choices.is_empty() => {
                let room = choices[*selected].clone();
                app.mode = Mode::Watching;
                return Action::Add(room);
            }
            KeyCode::Char('r') => return Action::OpenPicker,
            KeyCode::Esc if !app.rooms.is_empty() => app.mode = Mode::Watching,
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            _ => {}
        },
        Mode::Watching => match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Tab | KeyCode::Right if !app.rooms.is_empty() => {
                app.tab = (app.tab + 1) % app.rooms.len()
            }
            KeyCode::BackTab | KeyCode::Left if !app.rooms.is_empty() => {
                app.tab = (app.tab + app.rooms.len() - 1) % app.rooms.len()
            }
            KeyCode::Char('e') => app.expanded = !app.expanded,
            KeyCode::Char('r') => return Action::Refresh,
            KeyCode::Char('a') => return Action::OpenPicker,
            _ => {}
        },
    }
    Action::None
}

async fn watch(app: &mut App, hub: &HubClient, mut room: RoomView, tx: &mpsc::Sender<RoomEvent>) {
    match hub.participants(&room.code).await {
        Ok(list) => room.set_participants(list),
        Err(e) => app.status = format!("{}: {e}", room.code),
    }
    tokio::spawn(follow(hub.clone(), room.code.clone(), tx.clone()));
    app.rooms.push(room);
    app.tab = app.rooms.len() - 1;
}

/// Run the UI until the user quits.
pub(crate) async fn run(hub: HubClient, wanted: Vec<String>) -> ExitCode {
    let mut app = App::new(hub.url());
    let (tx, mut rx) = mpsc::channel::<RoomEvent>(1024);
    match resolve_rooms(&hub, &wanted).await {
        Ok(rooms) if !wanted.is_empty() => {
            for room in rooms {
                watch(&mut app, &hub, room, &tx).await;
            }
            app.tab = 0;
        }
        Ok(_) => {
            let choices = hub.list_rooms().await.unwrap_or_default();
            app.mode = Mode::Picking {
                choices,
                selected: 0,
            };
        }
        Err(e) => {
            eprintln!("gambiarra monitor: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Keys come from a thread: crossterm's reader blocks.
    let (key_tx, mut keys) = mpsc::channel::<KeyEvent>(64);
    std::thread::spawn(move || {
        while !key_tx.is_closed() {
            if let Ok(true) = event::poll(Duration::from_millis(200))
                && let Ok(Event::Key(k)) = event::read()
                && key_tx.blocking_send(k).is_err()
            {
                break;
            }
        }
    });
    let mut terminal = ratatui::init();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let code = loop {
        if let Err(e) = terminal.draw(|f| draw(f, &app)) {
            break Err(e.to_string());
        }
        tokio::select! {
            Some(ev) = rx.recv() => {
                apply_event(&hub, &mut app.rooms, &ev).await;
            }
            Some(key) = keys.recv() => match on_key(&mut app, key) {
                Action::None => {}
                Action::Quit => break Ok(()),
                Action::Refresh => {
                    if let Some(room) = app.rooms.get_mut(app.tab) {
                        match hub.participants(&room.code).await {
                            Ok(list) => { room.set_participants(list); app.status.clear(); }
                            Err(e) => app.status = e.to_string(),
                        }
                    }
                }
                Action::OpenPicker => match hub.list_rooms().await {
                    Ok(all) => {
                        let choices = all
                            .into_iter()
                            .filter(|r| !app.rooms.iter().any(|w| w.code == r.code))
                            .collect();
                        app.mode = Mode::Picking { choices, selected: 0 };
                    }
                    Err(e) => app.status = e.to_string(),
                },
                Action::Add(room) => watch(&mut app, &hub, RoomView::new(&room.code, &room.name), &tx).await,
            },
            _ = tick.tick() => {}
        }
    };
    ratatui::restore();
    match code {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gambiarra monitor: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::events::HubEvent;
    use crate::types::{GenerationConfig, LlmMetrics, MachineSpecs, ParticipantInfo};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn participant(id: &str, nick: &str) -> ParticipantInfo {
        ParticipantInfo {
            id: id.into(),
            nickname: nick.into(),
            model: "llama3:8b".into(),
            models: vec![crate::types::ModelInfo::named("llama3:8b")],
            protocols: Vec::new(),
            slots: None,
            endpoint: format!("http://{id}.lan:11434"),
            config: GenerationConfig::default(),
            specs: MachineSpecs {
                gpu: Some("RTX 4090".into()),
                vram: Some(24.into()),
                ram: Some(64.into()),
                cpu: Some("Ryzen 9".into()),
            },
            status: ParticipantStatus::Online,
            in_flight: 0,
            joined_at: 0,
            last_seen: 0,
        }
    }

    fn screen(app: &App) -> String {
        let mut t = Terminal::new(TestBackend::new(110, 30)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn demo() -> App {
        let mut app = App::new("http://hub:3000");
        let mut lab = RoomView::new("ABC234", "Lab");
        lab.apply(
            &HubEvent::Connected {
                client_id: "c".into(),
            },
            "10:00:00",
        );
        lab.apply(
            &HubEvent::ParticipantJoined(Box::new(participant("a", "alice"))),
            "10:00:01",
        );
        lab.apply(
            &HubEvent::ParticipantJoined(Box::new(participant("b", "bob"))),
            "10:00:02",
        );
        lab.apply(
            &HubEvent::LlmRequest {
                participant_id: "a".into(),
                model: "m".into(),
                requested: Some("*".into()),
            },
            "10:00:03",
        );
        lab.apply(
            &HubEvent::LlmRequest {
                participant_id: "b".into(),
                model: "m".into(),
                requested: Some("*".into()),
            },
            "10:00:04",
        );
        lab.apply(
            &HubEvent::LlmComplete {
                participant_id: "b".into(),
                model: "m".into(),
                requested: None,
                metrics: LlmMetrics {
                    tokens: 42,
                    latency_first_token_ms: 180,
                    duration_ms: 1200,
                    tokens_per_second: 41.5,
                },
            },
            "10:00:05",
        );
        lab.apply(
            &HubEvent::ParticipantOffline {
                participant_id: "b".into(),
            },
            "10:00:06",
        );
        app.rooms.push(lab);
        app.rooms.push(RoomView::new("XYZ789", "Other"));
        app
    }

    #[test]
    fn cards_statuses_log_and_keys() {
        let app = demo();
        let s = screen(&app);
        assert!(s.contains("Gambiarra monitor · http://hub:3000"), "{s}");
        assert!(
            s.contains("● ABC234 Lab") && s.contains("○ XYZ789 Other"),
            "{s}"
        );
        assert!(s.contains("Participants · 2"));
        let alice = s.lines().find(|l| l.contains("alice")).unwrap();
        assert!(
            alice.contains("llama3:8b")
                && alice.contains("http://a.lan:11434")
                && alice.contains("busy"),
            "{alice}"
        );
        let bob = s
            .lines()
            .find(|l| l.contains("bob") && l.contains("llama3"))
            .unwrap();
        assert!(
            bob.contains("offline") && bob.contains("41.5 tok/s · TTFT 180 ms"),
            "{bob}"
        );
        assert!(
            s.contains(
                "10:00:05 bob done: 42 tokens, 41.5 tok/s, first token 180 ms, 1200 ms total"
            ),
            "{s}"
        );
        assert!(s.contains("10:00:06 bob went offline"));
        assert!(s.contains(KEYS));
        assert!(!s.contains("RTX 4090"), "specs only when expanded");
    }

    #[test]
    fn models_with_loaded_markers_and_their_changes() {
        let mut app = demo();
        let mut alice = participant("a", "alice");
        alice.models = vec![
            crate::types::ModelInfo {
                loaded: Some(true),
                ..crate::types::ModelInfo::named("llama3:8b")
            },
            crate::types::ModelInfo {
                name: "phi3".into(),
                aliases: vec!["small".into()],
                loaded: Some(false),
            },
        ];
        app.rooms[0].apply(&HubEvent::ParticipantUpdated(Box::new(alice)), "10:00:07");
        let s = screen(&app);
        let card = s
            .lines()
            .find(|l| l.contains("alice") && l.contains("http"))
            .unwrap();
        assert!(card.contains("llama3:8b ●, phi3 ○"), "{card}");
        assert!(
            s.contains("10:00:07 alice: now serves phi3; loaded llama3:8b"),
            "{s}"
        );
        app.expanded = true;
        let s = screen(&app);
        assert!(s.contains("● llama3:8b  loaded"), "{s}");
        assert!(s.contains("○ phi3  not loaded  also: small"), "{s}");
    }

    #[test]
    fn keys_expand_switch_and_pick() {
        let mut app = demo();
        let press = |c: KeyCode| KeyEvent::new(c, KeyModifiers::NONE);
        on_key(&mut app, press(KeyCode::Char('e')));
        let s = screen(&app);
        assert!(
            s.contains("GPU:  RTX 4090 (24 GB VRAM)") && s.contains("CPU:  Ryzen 9"),
            "{s}"
        );
        on_key(&mut app, press(KeyCode::Tab));
        assert_eq!(app.tab, 1);
        assert!(screen(&app).contains("No participants yet."));
        assert!(matches!(
            on_key(&mut app, press(KeyCode::Char('a'))),
            Action::OpenPicker
        ));
        app.mode = Mode::Picking {
            choices: vec![RoomSummary {
                id: "i".into(),
                code: "NEW234".into(),
                name: "Fresh".into(),
                host_id: "h".into(),
                created_at: 0,
                participant_count: 3,
                password_protected: false,
            }],
            selected: 0,
        };
        assert!(screen(&app).contains("NEW234  Fresh  (3 participants)"));
        assert!(
            matches!(on_key(&mut app, press(KeyCode::Enter)), Action::Add(r) if r.code == "NEW234")
        );
        assert!(matches!(
            on_key(&mut app, press(KeyCode::Char('q'))),
            Action::Quit
        ));
    }
}
