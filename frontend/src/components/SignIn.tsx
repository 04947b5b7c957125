import { type FormEvent, useState } from 'react';
import { type Me, signIn } from '../protocol/auth';

/** The sign-in form shown while nobody is signed in (docs/security.md, "Accounts and ownership"). */
export function SignIn(props: { t(key: 'signInTitle' | 'signInHint' | 'signInKey' | 'signInName' | 'signInPassword' | 'signInWithKey' | 'signInWithPassword'): string; onSignedIn(me: Me): void }) {
  const { t } = props;
  const [key, setKey] = useState('');
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);

  const submit = (credentials: { key: string } | { name: string; password: string }) => async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      props.onSignedIn(await signIn(credentials));
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };

  return (
    <div className="app sign-in" data-testid="sign-in">
      <h1>{t('signInTitle')}</h1>
      <p className="muted">{t('signInHint')}</p>
      <form onSubmit={submit({ key: key.trim() })}>
        <input type="password" autoComplete="off" aria-label={t('signInKey')} placeholder={t('signInKey')}
          value={key} onChange={(e) => setKey(e.target.value)} data-testid="sign-in-key" />
        <button type="submit" disabled={!key.trim()}>{t('signInWithKey')}</button>
      </form>
      <form onSubmit={submit({ name: name.trim(), password })}>
        <input autoComplete="username" aria-label={t('signInName')} placeholder={t('signInName')}
          value={name} onChange={(e) => setName(e.target.value)} />
        <input type="password" autoComplete="current-password" aria-label={t('signInPassword')}
          placeholder={t('signInPassword')} value={password} onChange={(e) => setPassword(e.target.value)} />
        <button type="submit" disabled={!name.trim() || !password}>{t('signInWithPassword')}</button>
      </form>
      {error && <p className="problem error" role="alert" data-testid="sign-in-error">{error}</p>}
    </div>
  );
}
