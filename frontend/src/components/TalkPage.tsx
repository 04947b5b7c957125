import { type FormEvent, useState } from 'react';
import type { Conversation, Snapshot } from '../conversation';
import { useT } from '../i18n/context';
import type { StringKey } from '../i18n/strings';
import { Avatar } from './Avatar';
import { RateReply } from './RateReply';
import { VtsStatus } from './VtsStatus';

interface Props {
  convo: Conversation;
  snap: Snapshot;
}

export function TalkPage({ convo, snap }: Props) {
  const { t } = useT();
  const [text, setText] = useState('');
  const active = snap.connection !== 'idle' && snap.connection !== 'closed' && snap.connection !== 'failed';
  const stateLabel = snap.speaking ? t('speaking') : t(snap.state as StringKey);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    convo.sendText(text);
    setText('');
  };

  return (
    <section
      className="talk"
      data-testid="talk"
      data-played-chunks={snap.playedChunks}
      data-received-chunks={snap.receivedChunks}
      data-state={snap.state}
      data-connection={snap.connection}
      data-session-id={snap.sessionId ?? ''}
    >
      <div className="stage">
        <Avatar
          emotion={snap.emotion}
          analyser={convo.analyser}
          animator={snap.avatarLive ? convo.animator : null}
          clock={convo.clock}
          speaking={snap.speaking}
          label={t('ai')}
        />
        <div className="stage-status">
          <span className={`state-pill state-${snap.speaking ? 'speaking' : snap.state}`}>{stateLabel}</span>
          <span className="emotion-pill" data-testid="emotion">
            {t('emotion')}: {t(`emotion_${snap.emotion}` as StringKey)}
          </span>
          <VtsStatus api={convo.api} />
        </div>
      </div>

      <div className="controls">
        {!active ? (
          <button type="button" className="primary" data-testid="start" onClick={() => void convo.start()}>
            {t('start')}
          </button>
        ) : (
          <>
            <button type="button" data-testid="end" onClick={() => void convo.end()}>{t('end')}</button>
            <button
              type="button"
              data-testid="mic"
              aria-pressed={snap.micOn}
              className={snap.micOn ? 'mic on' : 'mic'}
              onClick={() => void (snap.micOn ? convo.stopMic() : convo.startMic())}
            >
              <i className="mic-dot" aria-hidden="true" />
              {snap.micOn ? t('micOn') : t('micOff')}
            </button>
            <button
              type="button"
              className="stop"
              data-testid="stop"
              disabled={!snap.speaking}
              onClick={() => convo.interrupt()}
            >
              ■ {t('stop')}
            </button>
          </>
        )}
      </div>

      <div className="input-mode" role="radiogroup" aria-label={t('inputMode')}>
        <label>
          <input type="radio" name="inmode" checked={snap.inputMode === 'handsfree'} onChange={() => convo.setInputMode('handsfree')} />
          {t('handsFree')}
        </label>
        <label>
          <input type="radio" name="inmode" checked={snap.inputMode === 'ptt'} onChange={() => convo.setInputMode('ptt')} />
          {t('pushToTalk')}
        </label>
        <label>
          <input type="checkbox" checked={snap.bargeIn} onChange={(e) => convo.setBargeIn(e.target.checked)} />
          {t('bargeIn')}
        </label>
      </div>

      {snap.inputMode === 'ptt' && active && (
        <button
          type="button"
          className={snap.pttActive ? 'ptt held' : 'ptt'}
          data-testid="ptt"
          disabled={!snap.micOn}
          onPointerDown={(e) => {
            e.currentTarget.setPointerCapture(e.pointerId);
            convo.pttDown();
          }}
          onPointerUp={() => convo.pttUp()}
          onPointerCancel={() => convo.pttUp()}
          onKeyDown={(e) => {
            if ((e.key === ' ' || e.key === 'Enter') && !e.repeat) convo.pttDown();
          }}
          onKeyUp={(e) => {
            if (e.key === ' ' || e.key === 'Enter') convo.pttUp();
          }}
        >
          {snap.pttActive ? t('releaseToSend') : t('holdToTalk')}
        </button>
      )}

      <div className="transcript" aria-live="polite">
        {snap.turns.length === 0 && !snap.partial && <p className="hint">{t('emptyTalk')}</p>}
        {snap.turns.map((turn) => (
          <div key={turn.key} className="turn" data-testid="turn" data-turn-id={turn.turnId ?? ''}>
            {turn.user && (
              <p className="bubble user" data-testid="user-text">
                <span className="who">{t('you')}</span>
                {turn.user}
                {turn.lowConfidence && <small className="warn"> · {t('lowConfidence')}</small>}
              </p>
            )}
            {(turn.ai || turn.turnId) && (
              <p className={`bubble ai emotion-${turn.emotion}`} data-testid="ai-text" data-done={turn.done ? 'true' : 'false'}>
                <span className="who">{t('ai')}</span>
                {turn.ai || '…'}
                {turn.interrupted && <small className="muted"> ({t('interrupted')})</small>}
                {turn.hqUrl && (
                  <button type="button" className="link" data-testid="replay-hq" onClick={() => void convo.replayHq(turn)}>
                    ▶ {t('replayHq')}
                  </button>
                )}
              </p>
            )}
            {turn.turnId && turn.done && turn.ai && (
              <RateReply turnId={turn.turnId} onRate={(rating, comment) => convo.api.rateTurn(turn.turnId ?? '', rating, comment)} />
            )}
          </div>
        ))}
        {snap.partial && (
          <p className="bubble user partial" data-testid="partial">
            <span className="who">{t('you')}</span>
            {snap.partial}
          </p>
        )}
      </div>

      <form className="text-input" onSubmit={submit}>
        <input
          value={text}
          onChange={(e) => setText(e.target.value)}
          placeholder={t('typeMessage')}
          aria-label={t('typeMessage')}
          disabled={!active}
        />
        <button type="submit" disabled={!active || !text.trim()}>{t('send')}</button>
      </form>
    </section>
  );
}
