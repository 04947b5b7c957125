/** Voice profiles: record or upload a sample, list, preview, delete, and pick one for the conversation. */

import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import type { ChangeEvent, FormEvent } from 'react';

import { SAMPLE_LIMITS, VoiceApiError, VoiceProfilesApi } from './api';
import type { PreviewMode, VoiceProfile } from './api';
import { SampleRecorder } from './recorder';
import type { Recording } from './recorder';
import './voice.css';

export interface VoiceProfilesPageProps {
  apiBase: string;
  selectedProfileId: string | null;
  onSelect(id: string | null): void;
}

interface Sample {
  blob: Blob;
  filename: string;
  seconds: number | null;
}

const DEFAULT_PREVIEW = 'Hello! This is how I sound in the conversation.';

function describe(err: unknown): string {
  if (err instanceof VoiceApiError) return `${err.message} (${err.code})`;
  return err instanceof Error ? err.message : String(err);
}

function checkSample(sample: Sample): string | null {
  if (sample.blob.size > SAMPLE_LIMITS.maxBytes) return 'The file is larger than 10 MB.';
  if (sample.seconds !== null && sample.seconds < SAMPLE_LIMITS.minSeconds) {
    return `Record at least ${SAMPLE_LIMITS.minSeconds} seconds.`;
  }
  return null;
}

export function VoiceProfilesPage({ apiBase, selectedProfileId, onSelect }: VoiceProfilesPageProps) {
  const api = useMemo(() => new VoiceProfilesApi(apiBase), [apiBase]);
  const [profiles, setProfiles] = useState<VoiceProfile[]>([]);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);
  const [name, setName] = useState('');
  const [transcript, setTranscript] = useState('');
  const [sample, setSample] = useState<Sample | null>(null);
  const [busy, setBusy] = useState(false);
  const [recording, setRecording] = useState(false);
  const [elapsed, setElapsed] = useState(0);
  const [previewText, setPreviewText] = useState(DEFAULT_PREVIEW);
  const [previewMode, setPreviewMode] = useState<PreviewMode>('hq');
  const [previewing, setPreviewing] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const recorder = useRef<SampleRecorder | null>(null);
  const audio = useRef<HTMLAudioElement | null>(null);
  const audioUrl = useRef<string | null>(null);

  const refresh = useCallback(async () => {
    setLoading(true);
    try {
      setProfiles(await api.list());
      setError(null);
    } catch (err) {
      setError(describe(err));
    } finally {
      setLoading(false);
    }
  }, [api]);

  useEffect(() => {
    void refresh();
  }, [refresh]);

  useEffect(() => {
    if (!recording) return undefined;
    const id = setInterval(() => setElapsed(recorder.current?.elapsed() ?? 0), 200);
    return () => clearInterval(id);
  }, [recording]);

  useEffect(
    () => () => {
      recorder.current?.release();
      audio.current?.pause();
      if (audioUrl.current) URL.revokeObjectURL(audioUrl.current);
    },
    [],
  );

  // A profile that was deleted elsewhere cannot stay selected.
  useEffect(() => {
    if (!loading && selectedProfileId && !profiles.some((p) => p.profile_id === selectedProfileId)) {
      onSelect(null);
    }
  }, [loading, profiles, selectedProfileId, onSelect]);

  const finishRecording = useCallback((rec: Recording) => {
    setRecording(false);
    setSample({ blob: rec.blob, filename: rec.filename, seconds: rec.seconds });
    setStatus(`Recorded ${rec.seconds.toFixed(1)} s.`);
  }, []);

  async function toggleRecording() {
    setError(null);
    if (recording && recorder.current) {
      finishRecording(await recorder.current.stop());
      return;
    }
    if (typeof MediaRecorder === 'undefined' || !navigator.mediaDevices) {
      setError('This browser cannot record audio; upload a file instead.');
      return;
    }
    const rec = new SampleRecorder(SAMPLE_LIMITS.maxSeconds);
    recorder.current = rec;
    try {
      await rec.start(finishRecording);
      setSample(null);
      setElapsed(0);
      setRecording(true);
      setStatus(`Recording... speak naturally for ${SAMPLE_LIMITS.minSeconds}-${SAMPLE_LIMITS.maxSeconds} s.`);
    } catch (err) {
      rec.release();
      setError(`Microphone unavailable: ${describe(err)}`);
    }
  }

  function pickFile(e: ChangeEvent<HTMLInputElement>) {
    const file = e.target.files?.[0];
    if (!file) return;
    setSample({ blob: file, filename: file.name, seconds: null });
    if (!name.trim()) setName(file.name.replace(/\.[^.]+$/, ''));
    setStatus(`Selected ${file.name}.`);
  }

  async function create(e: FormEvent) {
    e.preventDefault();
    if (!sample) return;
    const problem = checkSample(sample);
    if (problem) {
      setError(problem);
      return;
    }
    setBusy(true);
    setError(null);
    setStatus('Uploading and analysing the voice...');
    try {
      const profile = await api.create(sample.blob, name.trim(), transcript, sample.filename);
      setProfiles((list) => [profile, ...list.filter((p) => p.profile_id !== profile.profile_id)]);
      setStatus(`Saved "${profile.name}" (${profile.duration_sec.toFixed(1)} s).`);
      setSample(null);
      setName('');
      setTranscript('');
    } catch (err) {
      setError(describe(err));
      setStatus(null);
    } finally {
      setBusy(false);
    }
  }

  async function preview(profile: VoiceProfile) {
    setPreviewing(profile.profile_id);
    setError(null);
    setNotice(null);
    try {
      const result = await api.preview(profile.profile_id, previewText.trim() || DEFAULT_PREVIEW, previewMode);
      audio.current?.pause();
      if (audioUrl.current) URL.revokeObjectURL(audioUrl.current);
      audioUrl.current = URL.createObjectURL(result.audio);
      audio.current = new Audio(audioUrl.current);
      setNotice(result.notice);
      setStatus(`Playing "${profile.name}" with ${result.engine} (${result.voice}).`);
      await audio.current.play();
    } catch (err) {
      setError(describe(err));
    } finally {
      setPreviewing(null);
    }
  }

  async function remove(profile: VoiceProfile) {
    if (!window.confirm(`Delete the voice "${profile.name}" and its recording?`)) return;
    setError(null);
    try {
      await api.remove(profile.profile_id);
      setProfiles((list) => list.filter((p) => p.profile_id !== profile.profile_id));
      if (selectedProfileId === profile.profile_id) onSelect(null);
      setStatus(`Deleted "${profile.name}".`);
    } catch (err) {
      setError(describe(err));
      void refresh();
    }
  }

  return (
    <section className="vp-page" aria-labelledby="voice-profiles-title">
      <h2 id="voice-profiles-title">Voice profiles</h2>

      <form className="vp-new" onSubmit={(e) => void create(e)}>
        <h3>New voice</h3>
        <p className="vp-hint">
          {SAMPLE_LIMITS.minSeconds}-{SAMPLE_LIMITS.maxSeconds} seconds of one person speaking, in a quiet room
          (wav, flac, mp3, ogg/opus or webm, up to 10 MB).
        </p>
        <div className="vp-source">
          <button type="button" onClick={() => void toggleRecording()} disabled={busy} aria-pressed={recording}
            data-testid="voice-record">
            {recording ? `Stop (${elapsed.toFixed(0)} s)` : 'Record'}
          </button>
          <label>
            or upload a file{' '}
            <input
              type="file"
              accept=".wav,.flac,.mp3,.ogg,.opus,.webm,audio/*"
              onChange={pickFile}
              disabled={busy || recording}
              data-testid="voice-file"
            />
          </label>
        </div>
        <label>
          Name{' '}
          <input value={name} onChange={(e) => setName(e.target.value)} maxLength={100} required disabled={busy}
            data-testid="voice-name" />
        </label>
        <label>
          What is said in the sample (optional; transcribed automatically otherwise){' '}
          <textarea value={transcript} onChange={(e) => setTranscript(e.target.value)} maxLength={2000} rows={2} />
        </label>
        <button type="submit" disabled={!sample || !name.trim() || busy || recording} data-testid="voice-save">
          {busy ? 'Saving...' : 'Save voice'}
        </button>
      </form>

      {status && (
        <p role="status" data-testid="voice-status">
          {status}
        </p>
      )}
      {error && (
        <p role="alert" className="vp-error" data-testid="voice-error">
          {error}
        </p>
      )}
      {notice && (
        <p className="vp-notice" data-testid="voice-notice">
          {notice}
        </p>
      )}

      <div className="vp-preview-settings">
        <label>
          Preview sentence{' '}
          <input value={previewText} onChange={(e) => setPreviewText(e.target.value)} maxLength={500} />
        </label>
        <label>
          Quality{' '}
          <select value={previewMode} onChange={(e) => setPreviewMode(e.target.value as PreviewMode)}
            data-testid="voice-preview-mode">
            <option value="hq">high quality</option>
            <option value="fast">fast</option>
          </select>
        </label>
      </div>

      {loading && <p>Loading voices...</p>}
      {!loading && profiles.length === 0 && <p data-testid="voice-empty">No voice profiles yet.</p>}
      {!loading && (
        <ul className="vp-list">
          <li className={selectedProfileId === null ? 'vp-item vp-selected' : 'vp-item'}>
            <label>
              <input type="radio" name="voice" checked={selectedProfileId === null} onChange={() => onSelect(null)}
                data-testid="voice-default" />
              Default voice
            </label>
          </li>
          {profiles.map((p) => (
            <li key={p.profile_id} className={selectedProfileId === p.profile_id ? 'vp-item vp-selected' : 'vp-item'}
              data-testid="voice-item" data-profile-id={p.profile_id}>
              <label>
                <input
                  type="radio"
                  name="voice"
                  checked={selectedProfileId === p.profile_id}
                  onChange={() => onSelect(p.profile_id)}
                  data-testid="voice-select"
                />
                <strong>{p.name}</strong> <span className="vp-meta">{p.duration_sec.toFixed(1)} s</span>
              </label>
              {p.transcript && <p className="vp-said">“{p.transcript}”</p>}
              <button type="button" onClick={() => void preview(p)} disabled={previewing !== null}
                data-testid="voice-preview">
                {previewing === p.profile_id ? 'Synthesizing...' : 'Preview'}
              </button>
              <audio controls preload="none" src={api.audioUrl(p)} aria-label={`Original sample of ${p.name}`} />
              <button type="button" onClick={() => void remove(p)} className="vp-danger" data-testid="voice-delete">
                Delete
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

export default VoiceProfilesPage;
