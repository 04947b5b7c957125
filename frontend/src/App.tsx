import { type ComponentType, lazy, Suspense, useCallback, useEffect, useMemo, useState, useSyncExternalStore } from 'react';
import { HistoryPage } from './components/HistoryPage';
import { TalkPage } from './components/TalkPage';
import { Conversation } from './conversation';
import { LangContext } from './i18n/context';
import { initialLang, type Lang, messageFor, type StringKey, translate } from './i18n/strings';
import { ApiClient } from './protocol/api';
import { type Me, whoAmI } from './protocol/auth';
import { SignIn } from './components/SignIn';
import { LiveApi } from './live/api';
import { LiveConsole } from './live/console';
import { LivePage } from './live/LivePage';

interface VoicePageProps {
  apiBase: string;
  selectedProfileId: string | null;
  onSelect(id: string | null): void;
}

// The voice-profile page lives in src/voice/ (another module); mount it only when it is present.
const voiceModules = import.meta.glob<{ VoiceProfilesPage?: ComponentType<VoicePageProps> }>('./voice/VoiceProfilesPage.tsx');
const voiceLoader = Object.values(voiceModules)[0];
const VoiceProfilesPage = voiceLoader
  ? lazy(async () => {
      const mod = await voiceLoader();
      if (!mod.VoiceProfilesPage) throw new Error('VoiceProfilesPage is missing');
      return { default: mod.VoiceProfilesPage };
    })
  : null;

type Tab = 'talk' | 'history' | 'voices' | 'live';

const API_BASE = '';

/** Shows the app to a signed-in user, the sign-in form to anyone else. */
export function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined);
  const lang = initialLang(localStorage.getItem('avatar.lang'), navigator.language);
  useEffect(() => {
    whoAmI(API_BASE).then(setMe, () => setMe(null));
  }, []);
  if (me === undefined) return <p className="muted">…</p>;
  if (me === null) return <SignIn t={(k) => translate(lang, k)} onSignedIn={setMe} />;
  return <SignedInApp me={me} />;
}

function SignedInApp({ me }: { me: Me }) {
  const api = useMemo(() => new ApiClient(API_BASE), []);
  // The director console, for an admin (docs/live.md, "Director console").
  const live = useMemo(
    () => (me.role === 'admin' ? new LiveConsole(new LiveApi(API_BASE), (id, r, c) => api.rateTurn(id, r, c)) : null),
    [api, me.role],
  );
  const convo = useMemo(() => new Conversation(api), [api]);
  const snap = useSyncExternalStore(convo.subscribe, convo.getSnapshot);
  useEffect(() => {
    if (new URLSearchParams(window.location.search).has('debug')) {
      (window as unknown as { __avatar?: Conversation }).__avatar = convo;
    }
  }, [convo]);
  const [lang, setLang] = useState<Lang>(() => initialLang(localStorage.getItem('avatar.lang'), navigator.language));
  const [tab, setTab] = useState<Tab>('talk');
  const t = (k: StringKey) => translate(lang, k);

  useEffect(() => {
    localStorage.setItem('avatar.lang', lang);
    document.documentElement.lang = lang;
  }, [lang]);

  const onHistoryError = useCallback(
    (code: string, message: string, traceId: string | null) => convo.problem('error', code, message, traceId),
    [convo],
  );

  const connLabel = t(`conn_${snap.connection}` as StringKey);

  return (
    <LangContext.Provider value={lang}>
      <div className="app">
        <header className="topbar">
          <h1>{t('appTitle')}</h1>
          <span
            className={`conn conn-${snap.connection}`}
            data-testid="connection"
            data-status={snap.connection}
            title={snap.sessionId ?? ''}
          >
            <i aria-hidden="true" /> {connLabel}
            {snap.connection === 'reconnecting' && snap.reconnectAttempt > 0 ? ` (${snap.reconnectAttempt})` : ''}
          </span>
          <div className="settings">
            <select aria-label={t('ttsMode')} value={snap.ttsMode} data-testid="tts-mode"
              onChange={(e) => convo.setTtsMode(e.target.value === 'hq' ? 'hq' : 'fast')}>
              <option value="fast">{t('modeFast')}</option>
              <option value="hq">{t('modeHq')}</option>
            </select>
            <VoiceInput
              value={snap.voice}
              label={t('voice')}
              placeholder={t('voice')}
              onCommit={(v) => convo.setTtsMode(snap.ttsMode, v)}
            />
            <select aria-label={t('language')} value={lang} data-testid="lang" onChange={(e) => setLang(e.target.value as Lang)}>
              <option value="en">English</option>
              <option value="ko">한국어</option>
            </select>
          </div>
        </header>

        <nav className="tabs" role="tablist">
          {(['talk', 'history', ...(VoiceProfilesPage ? ['voices'] : []), ...(live ? ['live'] : [])] as Tab[]).map((k) => (
            <button key={k} type="button" role="tab" aria-selected={tab === k} data-testid={`tab-${k}`}
              className={tab === k ? 'tab active' : 'tab'} onClick={() => setTab(k)}>
              {t(k === 'talk' ? 'tabTalk' : k === 'history' ? 'tabHistory' : k === 'live' ? 'tabLive' : 'tabVoices')}
            </button>
          ))}
        </nav>

        <div className="problems" role="alert">
          {snap.problems.map((p) => (
            <div key={p.id} className={`problem ${p.kind}`} data-testid={p.kind} data-code={p.code}>
              <span>{messageFor(lang, p.kind === 'error' ? 'err_' : 'notice_', p.code, p.message)}</span>
              {p.traceId && <small className="trace">trace {p.traceId.slice(0, 8)}</small>}
              <button type="button" aria-label={t('dismiss')} onClick={() => convo.dismiss(p.id)}>×</button>
            </div>
          ))}
        </div>

        <main>
          {tab === 'talk' && <TalkPage convo={convo} snap={snap} />}
          {tab === 'history' && <HistoryPage api={api} currentSessionId={snap.sessionId} onError={onHistoryError} />}
          {tab === 'live' && live && <LivePage console={live} />}
          {tab === 'voices' && VoiceProfilesPage && (
            <Suspense fallback={<p className="muted">…</p>}>
              <VoiceProfilesPage
                apiBase={API_BASE}
                selectedProfileId={snap.voiceProfileId}
                onSelect={(id) => convo.setTtsMode(snap.ttsMode, snap.voice, id)}
              />
            </Suspense>
          )}
        </main>
      </div>
    </LangContext.Provider>
  );
}

/** Voice name field: sends `set_tts_mode` once on Enter or blur, not on every keystroke. */
function VoiceInput(props: { value: string; label: string; placeholder: string; onCommit(v: string): void }) {
  const [draft, setDraft] = useState(props.value);
  useEffect(() => setDraft(props.value), [props.value]);
  const commit = () => {
    if (draft.trim() !== props.value) props.onCommit(draft.trim());
  };
  return (
    <input
      className="voice-input"
      aria-label={props.label}
      placeholder={props.placeholder}
      value={draft}
      title={props.label}
      data-testid="voice"
      onChange={(e) => setDraft(e.target.value)}
      onBlur={commit}
      onKeyDown={(e) => {
        if (e.key === 'Enter') commit();
      }}
    />
  );
}
